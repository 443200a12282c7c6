"""Routing and validation against the vendored Run:ai OpenAPI subset.

The emulator answers only what the subset describes. ``ApiSpec.route`` maps a request to an
operation (404 for an unknown path, 405 for a method the real API does not define there, 501
for one it defines but the emulator does not serve), and ``SchemaValidator`` checks JSON
values against the document's schemas:

* ``$ref`` is resolved and ``allOf`` is merged into one schema (properties united, a property
  named by several parts must satisfy all of them, ``required`` united, the tightest bounds
  kept); keywords written beside a ``$ref`` (``nullable`` mostly) are honoured, as the
  document relies on them.
* ``type`` (a schema with ``properties`` or ``required`` is an object), ``nullable`` (``null``
  passes when any merged part says ``nullable: true``, or when the schema says nothing about
  the type), ``enum``, ``pattern`` (searched, as JSON Schema does), ``minLength``/
  ``maxLength``, ``minimum``/``maximum``, ``items``, ``additionalProperties`` and the
  ``uuid``, ``date-time``, ``int32`` and ``int64`` formats.
* Deliberately stricter than the document: an object property that the schema does not name
  is rejected even where the document leaves ``additionalProperties`` unset, so a client
  cannot send invented fields that the real service would silently drop. Only an explicit
  ``additionalProperties`` (``true`` or a schema) admits other names; an object schema with
  neither properties nor ``additionalProperties`` is free-form.

Errors carry the offending JSON path (``$.spec.environmentVariables[0].name``).
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

SUBSET_PATH = Path(__file__).with_name("runai-openapi-subset.json")
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
_TYPE_NAMES = {
    dict: "object",
    list: "array",
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
    type(None): "null",
}


@dataclass
class Issue:
    """One validation failure: a JSON path (``$``-rooted) and what is wrong there."""

    path: str
    details: str

    @property
    def field(self) -> str:
        """The path without the ``$.`` root, as Run:ai's ``complianceIssues[].field`` shows it."""
        if self.path == "$":
            return ""
        if self.path.startswith("$."):
            return self.path[2:]
        return self.path[1:] if self.path.startswith("$") else self.path

    def __str__(self) -> str:
        return f"{self.path}: {self.details}"


@dataclass
class Merged:
    """A schema with ``$ref`` resolved and ``allOf`` flattened (one level; properties stay lazy)."""

    types: set[str] = field(default_factory=set)
    nullable: bool = False
    properties: dict[str, list[dict]] = field(default_factory=dict)
    required: set[str] = field(default_factory=set)
    enum: list | None = None
    patterns: list[str] = field(default_factory=list)
    min_length: int | None = None
    max_length: int | None = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    items: list[dict] = field(default_factory=list)
    additional: bool | None = None  # None: unset, True: any, False: none
    additional_schemas: list[dict] = field(default_factory=list)
    formats: set[str] = field(default_factory=set)
    names: list[str] = field(default_factory=list)  # component names met while resolving

    @property
    def is_object(self) -> bool:
        return "object" in self.types

    def describe(self) -> str:
        return self.names[0] if self.names else "schema"


def json_type(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


class SchemaValidator:
    """Validate JSON values against schemas of one OpenAPI document."""

    def __init__(self, document: dict, strict_unknown_fields: bool = True):
        self.document = document
        self.strict_unknown_fields = strict_unknown_fields
        self._cache: dict[tuple[int, ...], tuple[list[dict], Merged]] = {}
        self._named: dict[str, dict] = {}

    # -- resolution -------------------------------------------------------------------------
    def lookup(self, ref: str) -> dict:
        if not ref.startswith("#/"):
            raise ValueError(f"unsupported reference {ref!r}")
        node: Any = self.document
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def schema(self, name: str) -> dict:
        return self.document["components"]["schemas"][name]

    def merge(self, schema: dict) -> Merged:
        return self.merge_all([schema])

    def merge_all(self, schemas: list[dict]) -> Merged:
        """Merge schemas that must all hold; cached by identity (the entry keeps them alive)."""
        key = tuple(id(s) for s in schemas)
        cached = self._cache.get(key)
        if cached is None:
            merged = Merged()
            for schema in schemas:
                self._merge_into(merged, schema, set())
            self._cache[key] = (list(schemas), merged)
            return merged
        return cached[1]

    def _merge_into(self, m: Merged, schema: dict, seen: set[int]) -> None:
        if id(schema) in seen:  # a cycle through allOf/$ref: nothing new to learn
            return
        seen = seen | {id(schema)}
        ref = schema.get("$ref")
        if isinstance(ref, str):
            m.names.append(ref.rsplit("/", 1)[-1])
            self._merge_into(m, self.lookup(ref), seen)
        for part in schema.get("allOf") or ():
            self._merge_into(m, part, seen)
        declared = schema.get("type")
        if isinstance(declared, str):
            m.types.add(declared)
        elif "properties" in schema or "required" in schema:
            m.types.add("object")
        if schema.get("nullable") is True:
            m.nullable = True
        for name, sub in (schema.get("properties") or {}).items():
            m.properties.setdefault(name, []).append(sub)
        m.required.update(schema.get("required") or ())
        if "enum" in schema:
            values = list(schema["enum"])
            m.enum = values if m.enum is None else [v for v in m.enum if v in values]
        if isinstance(schema.get("pattern"), str):
            m.patterns.append(schema["pattern"])
        if "minLength" in schema:
            m.min_length = max(m.min_length or 0, schema["minLength"])
        if "maxLength" in schema:
            ml = schema["maxLength"]
            m.max_length = ml if m.max_length is None else min(m.max_length, ml)
        if "minimum" in schema:
            if m.minimum is None or schema["minimum"] >= m.minimum:
                m.minimum = schema["minimum"]
                m.exclusive_minimum = bool(schema.get("exclusiveMinimum"))
        if "maximum" in schema:
            if m.maximum is None or schema["maximum"] <= m.maximum:
                m.maximum = schema["maximum"]
                m.exclusive_maximum = bool(schema.get("exclusiveMaximum"))
        if isinstance(schema.get("items"), dict):
            m.items.append(schema["items"])
        if "additionalProperties" in schema:
            extra = schema["additionalProperties"]
            if extra is False:
                m.additional = False
            elif m.additional is not False:
                m.additional = True
                if isinstance(extra, dict) and extra:
                    m.additional_schemas.append(extra)
        if isinstance(schema.get("format"), str):
            m.formats.add(schema["format"])

    # -- validation ---------------------------------------------------------------------------
    def validate(self, value: Any, schema: dict, path: str = "$") -> list[Issue]:
        issues: list[Issue] = []
        self._check_all(value, [schema], path, issues)
        return issues

    def validate_named(self, value: Any, name: str, path: str = "$") -> list[Issue]:
        """Validate against ``#/components/schemas/<name>`` (named so messages can cite it)."""
        ref = self._named.get(name)
        if ref is None:
            self.schema(name)  # KeyError for an unknown name
            ref = self._named[name] = {"$ref": f"#/components/schemas/{name}"}
        return self.validate(value, ref, path)

    def _check_all(self, value: Any, schemas: list[dict], path: str, issues: list[Issue]) -> None:
        self._check(value, self.merge_all(schemas), path, issues)

    def _check(self, value: Any, m: Merged, path: str, issues: list[Issue]) -> None:
        if value is None:
            if not m.nullable and m.types:
                issues.append(Issue(path, f"must not be null (expected {self._expected(m)})"))
            return
        if m.types and not self._type_ok(value, m.types):
            issues.append(
                Issue(path, f"expected {self._expected(m)}, got {json_type(value)} {_short(value)}")
            )
            return
        if m.enum is not None and value not in m.enum:
            allowed = ", ".join(json.dumps(v) for v in m.enum)
            issues.append(
                Issue(path, f"{_short(value)} is not one of the allowed values: {allowed}")
            )
            return
        if isinstance(value, str):
            self._check_string(value, m, path, issues)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            self._check_number(value, m, path, issues)
        elif isinstance(value, list):
            if m.items:
                for i, item in enumerate(value):
                    self._check_all(item, m.items, f"{path}[{i}]", issues)
        elif isinstance(value, dict):
            self._check_object(value, m, path, issues)

    @staticmethod
    def _expected(m: Merged) -> str:
        names = sorted(m.types)
        text = " or ".join(names)
        return f"{text} or null" if m.nullable else text

    @staticmethod
    def _type_ok(value: Any, types: set[str]) -> bool:
        actual = json_type(value)
        if actual in types:
            return True
        return actual == "integer" and "number" in types

    def _check_string(self, value: str, m: Merged, path: str, issues: list[Issue]) -> None:
        if m.min_length is not None and len(value) < m.min_length:
            issues.append(Issue(path, f"must be at least {m.min_length} characters long"))
        if m.max_length is not None and len(value) > m.max_length:
            issues.append(
                Issue(path, f"must be at most {m.max_length} characters long (got {len(value)})")
            )
        for pattern in m.patterns:
            try:
                matched = re.search(pattern, value) is not None
            except re.error:
                continue
            if not matched:
                issues.append(Issue(path, f"{_short(value)} does not match the pattern {pattern}"))
        if "uuid" in m.formats and not _UUID.match(value):
            issues.append(Issue(path, f"{_short(value)} is not a UUID"))
        if "date-time" in m.formats and not _is_datetime(value):
            issues.append(Issue(path, f"{_short(value)} is not an RFC 3339 date-time"))

    def _check_number(self, value: float, m: Merged, path: str, issues: list[Issue]) -> None:
        if m.minimum is not None:
            if value < m.minimum or (m.exclusive_minimum and value == m.minimum):
                op = ">" if m.exclusive_minimum else ">="
                issues.append(Issue(path, f"must be {op} {m.minimum} (got {value})"))
        if m.maximum is not None:
            if value > m.maximum or (m.exclusive_maximum and value == m.maximum):
                op = "<" if m.exclusive_maximum else "<="
                issues.append(Issue(path, f"must be {op} {m.maximum} (got {value})"))
        for fmt, (low, high) in _INT_RANGES.items():
            if fmt in m.formats and isinstance(value, int) and not low <= value <= high:
                issues.append(Issue(path, f"{value} does not fit in {fmt}"))

    def _check_object(self, value: dict, m: Merged, path: str, issues: list[Issue]) -> None:
        for name in sorted(m.required):
            if name not in value:
                issues.append(Issue(_join(path, name), "required field is missing"))
        free_form = not m.properties and m.additional is None
        for name, item in value.items():
            sub = _join(path, name)
            if name in m.properties:
                self._check_all(item, m.properties[name], sub, issues)
            elif m.additional_schemas:
                self._check_all(item, m.additional_schemas, sub, issues)
            elif m.additional or free_form or not self.strict_unknown_fields:
                continue
            else:
                hint = difflib.get_close_matches(name, list(m.properties), n=1, cutoff=0.7)
                extra = f"; did you mean {hint[0]!r}?" if hint else ""
                issues.append(
                    Issue(
                        sub,
                        f"unknown field {name!r}: {m.describe()} does not define it "
                        f"(the emulator rejects fields the API schema does not name){extra}",
                    )
                )


def _join(path: str, name: str) -> str:
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        return f"{path}.{name}"
    return f"{path}[{json.dumps(name)}]"


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_datetime(value: str) -> bool:
    if not re.match(
        r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$", value
    ):
        return False
    try:
        datetime.fromisoformat(re.sub(r"[Zz]$", "+00:00", value.replace("t", "T")))
    except ValueError:
        # Python < 3.11 parses only 3- or 6-digit fractions; the shape check above suffices.
        return True
    return True


# ---------------------------------------------------------------------------------------------
# Routing


@dataclass
class Route:
    """The outcome of matching a request line against the document's paths."""

    template: str | None  # the matched path template, None for an unknown path
    method: str
    operation: dict | None = None
    params: dict[str, str] = field(default_factory=dict)
    allowed: list[str] = field(default_factory=list)  # methods the path defines
    omitted: list[str] = field(default_factory=list)  # defined by the API, not emulated

    @property
    def status(self) -> int:
        """200 when routable, else the status that describes the miss (404, 405 or 501)."""
        if self.template is None:
            return 404
        if self.operation is not None:
            return 200
        return 501 if self.method in self.omitted else 405


class ApiSpec:
    """The vendored subset: paths, operations, parameters and schemas."""

    def __init__(self, document: dict):
        self.document = document
        self.validator = SchemaValidator(document)
        self._routes: list[tuple[int, int, re.Pattern, str, dict]] = []
        for template, item in document["paths"].items():
            names = re.findall(r"{([^}/]+)}", template)
            regex = "^" + re.sub(r"\\{[^}/]+\\}", "([^/]+)", re.escape(template)) + "$"
            # Literal segments beat parameters: sort by parameter count, then by length.
            self._routes.append((len(names), -len(template), re.compile(regex), template, item))
        self._routes.sort(key=lambda r: (r[0], r[1]))

    @classmethod
    def load(cls, path: Path | str = SUBSET_PATH) -> ApiSpec:
        return cls(json.loads(Path(path).read_text()))

    def route(self, method: str, path: str) -> Route:
        method = method.lower()
        for _, _, regex, template, item in self._routes:
            match = regex.match(path)
            if not match:
                continue
            names = re.findall(r"{([^}/]+)}", template)
            params = {n: unquote(v) for n, v in zip(names, match.groups(), strict=True)}
            allowed = [m for m in HTTP_METHODS if m in item]
            omitted = list(item.get("x-emulator-omitted-methods", ()))
            operation = item.get(method)
            return Route(template, method, operation, params, allowed, omitted)
        return Route(None, method)

    def parameters(self, route: Route, location: str) -> dict[str, dict]:
        """The operation's parameters in ``location`` (query or path), ``$ref`` resolved."""
        found: dict[str, dict] = {}
        item = self.document["paths"][route.template]
        operation = route.operation or {}
        for raw in list(item.get("parameters", ())) + list(operation.get("parameters", ())):
            param = self.validator.lookup(raw["$ref"]) if "$ref" in raw else raw
            if param.get("in") == location:
                found[param["name"]] = param
        return found

    def request_schema(self, route: Route) -> dict | None:
        body = (route.operation or {}).get("requestBody")
        if not body:
            return None
        if "$ref" in body:
            body = self.validator.lookup(body["$ref"])
        content = body.get("content", {}).get("application/json")
        return content.get("schema") if content else None

    def response_schema(self, route: Route, status: int) -> dict | None:
        response = (route.operation or {}).get("responses", {}).get(str(status))
        if not response:
            return None
        if "$ref" in response:
            response = self.validator.lookup(response["$ref"])
        content = response.get("content", {}).get("application/json")
        return content.get("schema") if content else None

    def error_schema_name(self, route: Route, status: int) -> str:
        """The component name of the error body the operation declares for ``status``."""
        response = (route.operation or {}).get("responses", {}).get(str(status), {})
        ref = response.get("$ref", "")
        if ref:
            response = self.validator.lookup(ref)
        schema = response.get("content", {}).get("application/json", {}).get("schema", {})
        return schema.get("$ref", "#/components/schemas/Error").rsplit("/", 1)[-1]

    # -- query parameters -------------------------------------------------------------------
    def parse_query(self, route: Route, query: dict[str, list[str]]) -> tuple[dict, list[Issue]]:
        """Convert and validate query parameters; unknown names are rejected."""
        declared = self.parameters(route, "query")
        values: dict[str, Any] = {}
        issues: list[Issue] = []
        for name, raw_values in query.items():
            where = f"query parameter {name}"
            param = declared.get(name)
            if param is None:
                known = ", ".join(sorted(declared)) or "none"
                issues.append(
                    Issue(where, f"unknown query parameter (this operation takes: {known})")
                )
                continue
            schema = param.get("schema", {})
            merged = self.validator.merge(schema)
            if "array" in merged.types:
                items: list[str] = []
                for raw in raw_values:
                    items.extend(_split_array(raw, param.get("explode", True), merged, self))
                value: Any = items
            else:
                if len(raw_values) > 1:
                    issues.append(Issue(where, "given more than once"))
                    continue
                value = _convert_scalar(raw_values[0], merged)
            for issue in self.validator.validate(value, schema, where):
                issues.append(issue)
            values[name] = value
        for name, param in declared.items():
            if param.get("required") and name not in values:
                issues.append(Issue(f"query parameter {name}", "required parameter is missing"))
        return values, issues

    def check_path_params(self, route: Route) -> list[Issue]:
        issues: list[Issue] = []
        for name, param in self.parameters(route, "path").items():
            value = route.params.get(name)
            issues.extend(
                self.validator.validate(value, param.get("schema", {}), f"path parameter {name}")
            )
        return issues


def _convert_scalar(raw: str, merged: Merged) -> Any:
    if "integer" in merged.types:
        try:
            return int(raw)
        except ValueError:
            return raw
    if "number" in merged.types:
        try:
            return float(raw)
        except ValueError:
            return raw
    if "boolean" in merged.types:
        return {"true": True, "false": False}.get(raw, raw)
    return raw


def _split_array(raw: str, explode: bool, merged: Merged, spec: ApiSpec) -> list[str]:
    """Split a non-exploded array (``a,b``) while keeping commas that belong to a value.

    A piece that does not match the items' pattern is glued back to the previous one, so
    ``filterBy=name==a,b,projectId==1`` is ``["name==a,b", "projectId==1"]``.
    """
    if explode:
        return [raw]
    patterns: list[str] = []
    for item in merged.items:
        patterns.extend(spec.validator.merge(item).patterns)
    pieces = raw.split(",")
    out: list[str] = []
    for piece in pieces:
        starts_item = not patterns or all(re.search(p, piece) for p in patterns)
        if out and not starts_item:
            out[-1] = f"{out[-1]},{piece}"
        else:
            out.append(piece)
    return out
