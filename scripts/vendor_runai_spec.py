#!/usr/bin/env python3
"""Extract the part of the Run:ai OpenAPI document that the DGX Cloud emulator serves.

Usage:
    python scripts/vendor_runai_spec.py [SOURCE] [DEST]

SOURCE defaults to ``/work/shared/specs/runai-openapi.json`` (or ``$RUNAI_OPENAPI_SPEC``);
DEST defaults to ``nemo_run/testing/dgxcloud/runai-openapi-subset.json`` in this repository.

The subset keeps, for every path the emulator answers, only the operations it implements;
the methods the full document defines for such a path but the emulator does not serve are
listed under ``x-emulator-omitted-methods`` (the emulator answers them 501, not 405, since
the real API has them). Every component (schema, response, parameter, request body,
security scheme) the kept operations reference is copied, transitively. Nothing is
rewritten: the kept objects are byte-for-byte the document's own, so the emulator validates
against the real schemas.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = os.environ.get("RUNAI_OPENAPI_SPEC", "/work/shared/specs/runai-openapi.json")
DEFAULT_DEST = ROOT / "nemo_run" / "testing" / "dgxcloud" / "runai-openapi-subset.json"

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
WORKLOAD_KINDS = ("trainings", "distributed", "workspaces")

# path -> the operations the emulator implements on it
SELECTED: dict[str, tuple[str, ...]] = {
    "/api/v1/token": ("post",),
    "/api/v1/org-unit/projects": ("get",),
    "/api/v1/workloads": ("get",),
    "/api/v1/workloads/{workloadId}": ("get",),
    "/api/v1/workloads/{workloadId}/pods": ("get",),
}
for _kind in WORKLOAD_KINDS:
    SELECTED[f"/api/v1/workloads/{_kind}"] = ("post",)
    SELECTED[f"/api/v1/workloads/{_kind}/{{workloadId}}"] = ("get", "delete")
    SELECTED[f"/api/v1/workloads/{_kind}/{{workloadId}}/suspend"] = ("post",)
    SELECTED[f"/api/v1/workloads/{_kind}/{{workloadId}}/resume"] = ("post",)

# Components every emulator reply may use even where no kept operation names them.
ALWAYS_SCHEMAS = ("Error", "SubmissionErrorV2", "HttpResponse")


def _refs(node, found: set[str]) -> None:
    """Collect every local ``$ref`` target under ``node``."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            found.add(ref)
        for value in node.values():
            _refs(value, found)
    elif isinstance(node, list):
        for value in node:
            _refs(value, found)


def _lookup(doc: dict, ref: str):
    if not ref.startswith("#/"):
        raise ValueError(f"only local references are supported, got {ref!r}")
    node = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[part]
    return node


def build_subset(doc: dict) -> dict:
    paths: dict[str, dict] = {}
    for path, methods in SELECTED.items():
        item = doc["paths"].get(path)
        if item is None:
            raise KeyError(f"path {path} is not in the source document")
        kept: dict = {}
        for key, value in item.items():
            if key not in HTTP_METHODS:
                kept[key] = value  # path-level parameters, summary, ...
        for method in methods:
            if method not in item:
                raise KeyError(f"{method.upper()} {path} is not in the source document")
            kept[method] = item[method]
        omitted = [m for m in HTTP_METHODS if m in item and m not in methods]
        if omitted:
            kept["x-emulator-omitted-methods"] = omitted
        paths[path] = kept

    components: dict[str, dict] = {}
    pending: set[str] = set()
    _refs(paths, pending)
    pending.update(f"#/components/schemas/{name}" for name in ALWAYS_SCHEMAS)
    security = doc.get("security") or []
    for requirement in security:
        for name in requirement:
            pending.add(f"#/components/securitySchemes/{name}")
    done: set[str] = set()
    while pending:
        ref = pending.pop()
        if ref in done:
            continue
        done.add(ref)
        target = _lookup(doc, ref)
        parts = ref[2:].split("/")
        if parts[0] != "components" or len(parts) != 3:
            raise ValueError(f"unexpected reference {ref}")
        components.setdefault(parts[1], {})[parts[2]] = target
        found: set[str] = set()
        _refs(target, found)
        pending.update(found - done)

    ordered = {k: dict(sorted(v.items())) for k, v in sorted(components.items())}

    info = dict(doc.get("info", {}))
    info["x-emulator-subset"] = (
        "Subset of the NVIDIA Run:ai OpenAPI document for the nemo_run DGX Cloud emulator; "
        "regenerate with scripts/vendor_runai_spec.py."
    )
    subset = {"openapi": doc["openapi"], "info": info}
    if "servers" in doc:
        subset["servers"] = doc["servers"]
    if security:
        subset["security"] = security
    subset["paths"] = paths
    subset["components"] = ordered
    return subset


def main(argv: list[str]) -> int:
    source = Path(argv[1]) if len(argv) > 1 else Path(DEFAULT_SOURCE)
    dest = Path(argv[2]) if len(argv) > 2 else DEFAULT_DEST
    doc = json.loads(source.read_text())
    subset = build_subset(doc)
    text = json.dumps(subset, indent=1, sort_keys=False, ensure_ascii=False) + "\n"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text)
    counts = {k: len(v) for k, v in subset["components"].items()}
    print(
        f"wrote {dest} ({len(text.encode()) // 1024} KiB): {len(subset['paths'])} paths, {counts}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
