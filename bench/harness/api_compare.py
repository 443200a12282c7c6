"""Compare two API descriptions (from `harness.api_describe`), apply the documented exceptions
and write the report: the half of `bench/api_diff.py` that runs only in the harness.

Keys name exactly one thing, so an exception row matches one difference and nothing else:

- `nemo_run.core.execution.docker` - a module;
- `nemo_run.core.execution.docker.DockerJobRequest` - a module-level name, or a class member
  (method, property, attribute, dataclass field), as `module.Class.member`;
- `nemo_run.core.execution.docker.DockerExecutor.__init__(healthcheck)` - one parameter of a
  constructor, method or function (`*args` and `**kwargs` whatever their real names);
- `...DockerExecutor.__init__[order]` - the order of a callable's positional parameters;
- `...DockerExecutor[bases]`, `...DockerExecutor[dataclass]` - a class's ancestors, or its
  being a dataclass; `module.__all__` - the module's `__all__`.

Classes and functions are keyed by where 0.11.1 defines them (`module.qualname`), so one class
re-exported under several names is compared, and reported, once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

PEER = "0.11.1"
PACKAGE = "nemo_run"
CATEGORIES = ("missing", "differing", "extra")
KIND_WORDS = {
    "POSITIONAL_ONLY": "positional-only",
    "POSITIONAL_OR_KEYWORD": "positional-or-keyword",
    "VAR_POSITIONAL": "*args",
    "KEYWORD_ONLY": "keyword-only",
    "VAR_KEYWORD": "**kwargs",
}
POSITIONAL = ("POSITIONAL_ONLY", "POSITIONAL_OR_KEYWORD")
# methods Python itself calls with positional arguments only: parameter names do not matter
POSITIONAL_PROTOCOL = frozenset({"__enter__", "__exit__"})
SECTION = "## API report exceptions"


class ExceptionsError(ValueError):
    """The exceptions table cannot be read; the message names the line and the fix."""


@dataclass
class Difference:
    """One thing that is not the same here as in 0.11.1."""

    key: str
    category: str  # one of CATEGORIES
    message: str
    module: str  # report heading
    owner: str = ""  # class qualname under the heading, "" at module level
    why: str | None = None  # set when a row of the exceptions table explains it
    via: list[str] = field(default_factory=list)  # other classes it was also found on
    on_owner: bool = True  # found on `owner` itself, not only on classes that inherit it


@dataclass
class Comparison:
    differences: dict[str, Difference] = field(default_factory=dict)
    compared: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)  # exception rows nothing matched
    # the modules compared in full (None: everything was, so no row lies outside), and the
    # top-level names (`nemo_run.Config`) compared
    scope_modules: set[str] | None = None
    scope_names: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class ExceptionRow:
    key: str
    difference: str
    why: str
    line: int


# ---------------------------------------------------------------------------- formatting


def format_param(param: dict[str, Any]) -> str:
    name = param["name"]
    return name if param["default"] is None else f"{name}={param['default']}"


def format_signature(sig: dict[str, Any] | None) -> str:
    """`(a, b=1, *, c)` from a described signature, markers included."""
    if not sig or "params" not in sig:
        return "(?)"
    parts: list[str] = []
    kinds = [p["kind"] for p in sig["params"]]
    for i, param in enumerate(sig["params"]):
        if (
            param["kind"] == "KEYWORD_ONLY"
            and "VAR_POSITIONAL" not in kinds[:i]
            and "*" not in parts
        ):
            parts.append("*")
        parts.append(format_param(param))
        if param["kind"] == "POSITIONAL_ONLY" and (
            i + 1 == len(kinds) or kinds[i + 1] != "POSITIONAL_ONLY"
        ):
            parts.append("/")
    return "(" + ", ".join(parts) + ")"


def shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def summary(entry: dict[str, Any], objects: dict[str, Any], path: str) -> str:
    """What a name is on one side, in a few words: `class X(...)`, `function(...)`, data."""
    kind = entry.get("kind")
    if kind == "data":
        return shorten(f"data {entry['type']} = {entry['value']}")
    if kind in ("class", "function"):
        oid = entry["id"]
        where = "" if oid == path else f" (re-export of {oid})"
        obj = objects.get(oid, {})
        sig = obj.get("init") if kind == "class" else obj
        shown = format_signature(sig) if sig and "params" in sig else ""
        return shorten(f"{kind}{where} {shown}".rstrip())
    return str(entry.get("error", kind))


# ---------------------------------------------------------------------------- comparing


class Place(NamedTuple):
    """Where a difference is keyed and grouped: a key prefix (a class id, or a callable's
    path), the module heading and the class under it."""

    prefix: str
    module: str
    owner: str


class Comparer:
    """Walks the peer's description and looks each thing up in ours."""

    def __init__(
        self,
        peer: dict[str, Any],
        ours: dict[str, Any],
        full_modules: Iterable[str],
        top_level: Iterable[str],
        package: str = PACKAGE,
    ) -> None:
        self.peer, self.ours = peer, ours
        self.package = package
        self.full_modules = set(full_modules)
        self.top_level = set(top_level)
        self.result = Comparison()
        self.done: set[tuple[str, str]] = set()

    def add(self, category: str, key: str, message: str, at: Place, via: str = "") -> None:
        """Record a difference; the same key found again (a re-export, or a member inherited
        by another class) only notes the class it was also found on."""
        known = self.result.differences.get(key)
        if known is None:
            known = self.result.differences[key] = Difference(
                key, category, message, at.module, at.owner, on_owner=via in ("", at.owner)
            )
        if via == known.owner:
            known.on_owner = True
        elif via and via not in known.via:
            known.via.append(via)

    def run(self) -> Comparison:
        self.result.scope_modules = set(self.full_modules)
        self.result.scope_names = {f"{self.package}.{name}" for name in self.top_level}
        for name, pmod in self.peer["modules"].items():
            self.module(name, pmod, self.ours["modules"].get(name))
        return self.result

    def module(self, mod: str, pmod: dict[str, Any], omod: dict[str, Any] | None) -> None:
        at = Place(mod, mod, "")
        if "error" in pmod:
            self.result.notes.append(
                f"{PEER} could not import {mod} ({pmod['error']}): not compared"
            )
            return
        self.result.compared.add(mod)
        if omod is None or "error" in omod:
            why = omod["error"] if omod else "not described"
            self.add("missing", mod, f"module cannot be imported here: {why}", at)
            return
        self.module_all(mod, pmod, omod)
        for name, pentry in pmod["names"].items():
            self.name(mod, name, pentry, omod)
        for name, oentry in omod["names"].items():
            if name not in pmod["names"]:
                peer_has = pmod["skipped"].get(name)
                note = f" ({PEER}: {peer_has})" if peer_has else ""
                text = summary(oentry, self.ours["objects"], f"{mod}.{name}") + note
                self.add("extra", f"{mod}.{name}", text, at)

    def module_all(self, mod: str, pmod: dict[str, Any], omod: dict[str, Any]) -> None:
        """`from module import *` gets the same names."""
        if pmod["all"] is None:
            return
        key, at = f"{mod}.__all__", Place(mod, mod, "")
        if omod["all"] is None:
            self.add("differing", key, f"{PEER} defines __all__ {pmod['all']}; here none", at)
            return
        lacking = sorted(set(pmod["all"]) - set(omod["all"]))
        if lacking:
            self.add("differing", key, f"not in __all__ here: {', '.join(lacking)}", at)

    def name(self, mod: str, name: str, pentry: dict[str, Any], omod: dict[str, Any]) -> None:
        path, at = f"{mod}.{name}", Place(mod, mod, "")
        self.result.compared.add(path)
        if "error" in pentry:
            self.result.notes.append(f"{PEER} fails to load {path} ({pentry['error']})")
            return
        oentry = omod["names"].get(name)
        peer_text = summary(pentry, self.peer["objects"], path)
        if oentry is None:
            reason = omod["skipped"].get(name)
            if reason:
                self.add("differing", path, f"here only {reason}; {PEER}: {peer_text}", at)
            else:
                self.add("missing", path, peer_text, at)
            return
        if "error" in oentry:
            self.add("differing", path, f"fails to load here: {oentry['error']}", at)
            return
        if pentry["kind"] != oentry["kind"]:
            ours_text = summary(oentry, self.ours["objects"], path)
            self.add("differing", path, f"{PEER}: {peer_text}; here: {ours_text}", at)
            return
        if pentry["kind"] == "data":
            self.data(path, at, pentry, oentry)
        elif pentry["kind"] in ("class", "function"):
            self.object(mod, name, pentry["id"], oentry["id"])

    def data(self, path: str, at: Place, pentry: dict[str, Any], oentry: dict[str, Any]) -> None:
        if pentry["type"] != oentry["type"]:
            self.add("differing", path, f"type: {PEER} {pentry['type']}, here {oentry['type']}", at)
        elif pentry["value"] != oentry["value"]:
            msg = f"value: {PEER} {shorten(pentry['value'])}, here {shorten(oentry['value'])}"
            self.add("differing", path, msg, at)

    def object(self, mod: str, name: str, pid: str, oid: str) -> None:
        """Compare a class or function in full once, where it belongs to this scope: defined
        in a module of the scope, or asked for as a top-level name. A re-export of something
        from outside the scope is only checked to exist."""
        pobj, oobj = self.peer["objects"].get(pid), self.ours["objects"].get(oid)
        if pobj is None or oobj is None or (pid, oid) in self.done:
            return
        listed = mod == self.package and name in self.top_level
        if pobj.get("module") not in self.full_modules and not listed:
            return
        self.done.add((pid, oid))
        if pobj["kind"] == "class":
            self.klass(pid, pobj, oobj)
        else:
            self.params(Place(pid, pobj["module"], ""), pobj, oobj)

    def declared(self, owner: list[str] | None, here: Place) -> Place:
        """Key a member where 0.11.1 declares it, when that is a class of the package: one
        gap of a base class is then reported once, not once per subclass."""
        if owner and (owner[0] == self.package or owner[0].startswith(self.package + ".")):
            return Place(f"{owner[0]}.{owner[1]}", owner[0], owner[1])
        return here

    def klass(self, pid: str, p: dict[str, Any], o: dict[str, Any]) -> None:
        here = Place(pid, p["module"], p["qualname"])
        self.bases(here, p, o)
        if p["dataclass"] and not o["dataclass"]:
            msg = f"a dataclass in {PEER} (dataclasses.fields/replace/asdict work on it), not here"
            self.add("differing", f"{pid}[dataclass]", msg, here)
        if p["init"] is not None:
            self.constructor(here, p, o)
        if o["dataclass"]:
            self.fields(here, p, o)
        self.members(here, p, o)

    def constructor(self, here: Place, p: dict[str, Any], o: dict[str, Any]) -> None:
        """`Class.__init__`, each parameter keyed at the class declaring its field."""
        places = {}
        for param in p["init"].get("params", []):
            field_ = p["fields"].get(param["name"])
            decl = self.declared(field_["owner"] if field_ else p.get("init_owner"), here)
            places[param["name"]] = decl._replace(prefix=f"{decl.prefix}.__init__")
        o_init = o["init"] or {"error": "no constructor"}
        at = here._replace(prefix=f"{here.prefix}.__init__")
        self.params(at, p["init"], o_init, places, via=here.owner)

    def bases(self, here: Place, p: dict[str, Any], o: dict[str, Any]) -> None:
        """Ancestors user code may test with isinstance: public classes of the described
        scope and anything from outside the package (torchx's schedulers, Enum, str, ...).
        The peer's private mixins are left out: their methods are compared as members."""

        objects = self.peer["objects"]

        def matters(base: str) -> bool:
            return base in objects or not base.startswith(self.package + ".")

        def parents_gap(base: str) -> bool:
            """A parent this class does have here lacks `base` too: reported there."""
            for parent in p["bases"]:
                pobj = objects.get(parent, {})
                compared = pobj.get("kind") == "class" and pobj.get("module") in self.full_modules
                if compared and parent in o["mro"] and base in pobj["mro"]:
                    return True
            return False

        lacking = [b for b in p["mro"] if matters(b) and b not in o["mro"] and not parents_gap(b)]
        if lacking:
            msg = f"not a subclass here of {', '.join(lacking)} (isinstance/issubclass differ)"
            self.add("differing", f"{here.prefix}[bases]", msg, here)

    def fields(self, here: Place, p: dict[str, Any], o: dict[str, Any]) -> None:
        """Dataclass fields the constructor comparison does not already cover: those set
        after construction (`init=False`), and fields that exist only as a parameter here."""
        o_params = {q["name"] for q in (o["init"] or {}).get("params", [])}
        for name, pf in p["fields"].items():
            at = self.declared(pf.get("owner"), here)
            key = f"{at.prefix}.{name}"
            self.result.compared.add(key)
            of = o["fields"].get(name)
            if of is None:
                covered = pf["init"] and name not in o_params  # reported as a parameter
                if not covered and name not in o["members"]:
                    self.add("missing", key, f"field (default {pf['default']})", at, here.owner)
                continue
            if not pf["init"] and pf["default"] != of["default"]:
                msg = f"default: {PEER} {pf['default']}, here {of['default']}"
                self.add("differing", key, msg, at, here.owner)
        for name, of in o["fields"].items():
            if name not in p["fields"] and not of["init"] and name not in p["members"]:
                at = self.declared(of.get("owner"), here)
                msg = f"field (default {of['default']})"
                self.add("extra", f"{at.prefix}.{name}", msg, at, here.owner)

    def members(self, here: Place, p: dict[str, Any], o: dict[str, Any]) -> None:
        for name, pm in p["members"].items():
            at = self.declared(pm.get("owner"), here)
            key = f"{at.prefix}.{name}"
            self.result.compared.add(key)
            om = o["members"].get(name)
            if om is None:
                if name in o["fields"] and pm["kind"] == "attribute":
                    continue  # a class attribute there, a dataclass field here: same access
                self.add("missing", key, member_text(pm), at, here.owner)
            elif pm["kind"] != om["kind"]:
                msg = f"{PEER}: {member_text(pm)}; here: {member_text(om)}"
                self.add("differing", key, msg, at, here.owner)
            elif pm["kind"] == "attribute" and pm["value"] != om["value"]:
                msg = f"value: {PEER} {shorten(pm['value'])}, here {shorten(om['value'])}"
                self.add("differing", key, msg, at, here.owner)
            elif "params" in pm or "error" in pm:
                self.params(at._replace(prefix=key), pm, om, via=here.owner)
        for name, om in o["members"].items():
            if name not in p["members"] and name not in p["fields"]:
                at = self.declared(om.get("owner"), here)
                self.add("extra", f"{at.prefix}.{name}", member_text(om), at, here.owner)

    def params(
        self,
        at: Place,
        psig: dict[str, Any],
        osig: dict[str, Any],
        places: dict[str, Place] | None = None,
        via: str = "",
    ) -> None:
        """Each parameter by name (kind and default), extra ones, and the positional order.
        `at.prefix` is the callable's path; `places` may key a parameter elsewhere."""
        if "params" not in psig:
            return  # Python could not read 0.11.1's signature: nothing to hold ours to
        if "params" not in osig:
            self.add(
                "differing", at.prefix, f"signature unreadable here: {osig.get('error')}", at, via
            )
            return
        pp = {q["name"]: q for q in psig["params"]}
        op = {q["name"]: q for q in osig["params"]}
        by_position = at.prefix.rsplit(".", 1)[-1] in POSITIONAL_PROTOCOL and "*args" in op
        for name, q in pp.items():
            if by_position and name not in op and q["kind"] in POSITIONAL:
                continue  # the `with` statement passes it by position, and *args takes it
            where = (places or {}).get(name, at)
            key = f"{where.prefix}({name})"
            self.param(key, where, q, op.get(name), "**kwargs" in op, via)
        for name, q in op.items():
            if name in pp:
                continue
            key = f"{at.prefix}({name})"
            if q["required"]:
                msg = f"extra required parameter {name}: code written for {PEER} does not pass it"
                self.add("differing", key, msg, at, via)
            else:
                self.add("extra", key, f"parameter {format_param(q)}", at, via)
        self.order(at, psig["params"], osig["params"], via)

    def param(
        self,
        key: str,
        at: Place,
        p: dict[str, Any],
        o: dict[str, Any] | None,
        o_kwargs: bool,
        via: str,
    ) -> None:
        if o is None:
            by_kwargs = o_kwargs and p["kind"] != "VAR_POSITIONAL"
            note = " (accepted only by **kwargs here)" if by_kwargs else ""
            self.add("differing", key, f"missing parameter {format_param(p)}{note}", at, via)
            return
        parts = []
        if p["kind"] != o["kind"]:
            parts.append(f"kind: {PEER} {KIND_WORDS[p['kind']]}, here {KIND_WORDS[o['kind']]}")
        if p["default"] != o["default"]:
            pd, od = p["default"] or "required", o["default"] or "required"
            parts.append(f"default: {PEER} {pd}, here {od}")
        if parts:
            self.add("differing", key, "; ".join(parts), at, via)

    def order(self, at: Place, pparams: list[Any], oparams: list[Any], via: str) -> None:
        """A positional call binds by position: each of 0.11.1's positional parameters must
        sit at the same index here."""
        p_pos = [q["name"] for q in pparams if q["kind"] in POSITIONAL]
        o_pos = [q["name"] for q in oparams if q["kind"] in POSITIONAL]
        moved = [n for i, n in enumerate(p_pos) if n in o_pos and o_pos.index(n) != i]
        if moved:
            msg = f"positional order: {PEER} ({', '.join(p_pos)}), here ({', '.join(o_pos)})"
            self.add("differing", f"{at.prefix}[order]", msg, at, via)


def member_text(member: dict[str, Any]) -> str:
    kind = member["kind"]
    if kind == "attribute":
        return f"attribute = {shorten(member['value'])}"
    if kind == "property":
        return "property"
    return f"{kind}{format_signature(member)}"


def compare(
    peer: dict[str, Any],
    ours: dict[str, Any],
    full_modules: Iterable[str],
    top_level: Iterable[str],
    package: str = PACKAGE,
) -> Comparison:
    """Every difference between the two descriptions, keyed as the module docstring says."""
    return Comparer(peer, ours, full_modules, top_level, package).run()


# ---------------------------------------------------------------------------- exceptions


def table_cells(line: str) -> list[str]:
    """The cells of one markdown table row, backticks around a whole cell removed."""
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    return [c[1:-1] if len(c) > 1 and c.startswith("`") and c.endswith("`") else c for c in cells]


def parse_exceptions(text: str) -> dict[str, ExceptionRow]:
    """Rows of the `## API report exceptions` table (`| name | difference | why |`); no section
    means no exceptions. A malformed row raises: a silent typo would hide nothing."""
    rows: dict[str, ExceptionRow] = {}
    inside = False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("#"):
            inside = line.strip() == SECTION
            continue
        if not inside or not line.lstrip().startswith("|"):
            continue
        cells = table_cells(line)
        if cells[0].lower() == "name" or set("".join(cells)) <= set("-: "):
            continue  # header or separator
        row = exception_row(cells, number)
        if row.key in rows:
            raise ExceptionsError(f"line {number}: {row.key} is listed twice; keep one row")
        rows[row.key] = row
    return rows


def exception_row(cells: list[str], number: int) -> ExceptionRow:
    if len(cells) != 3:
        raise ExceptionsError(
            f"line {number}: expected 3 cells (name | difference | why), got {len(cells)}"
        )
    key, difference, why = cells
    if not key or " " in key:
        raise ExceptionsError(
            f"line {number}: name {key!r} must be one key as the report prints it"
        )
    if not why:
        raise ExceptionsError(f"line {number}: {key} needs a why")
    return ExceptionRow(key, difference, why, number)


def in_scope(key: str, comparison: Comparison) -> bool:
    """Whether a key falls under what was compared: a compared module or something keyed
    under it, or exactly a compared top-level name."""
    if comparison.scope_modules is None or key in comparison.scope_names:
        return True
    return any(
        key == mod or key.startswith((f"{mod}.", f"{mod}(", f"{mod}["))
        for mod in comparison.scope_modules
    )


def apply_exceptions(comparison: Comparison, rows: dict[str, ExceptionRow]) -> None:
    """Mark the explained differences; rows that explain nothing are listed as stale, unless
    their key lies outside the compared scopes (`--scope run` says nothing of executors)."""
    used = set()
    for diff in comparison.differences.values():
        row = rows.get(diff.key)
        if row is not None and diff.category != "extra":
            diff.why = row.why
            used.add(row.key)
    unused = set(rows) - used
    comparison.stale = sorted(k for k in unused if in_scope(k, comparison))


# ---------------------------------------------------------------------------- the report


def counts(comparison: Comparison) -> dict[str, int]:
    diffs = comparison.differences.values()
    open_ = [d for d in diffs if d.why is None]
    return {
        "compared": len(comparison.compared),
        "missing": sum(d.category == "missing" for d in open_),
        "differing": sum(d.category == "differing" for d in open_),
        "intentional": sum(d.why is not None for d in diffs),
        "extra": sum(d.category == "extra" for d in diffs),
    }


def summary_line(numbers: dict[str, int]) -> str:
    return (
        f"in scope: {numbers['compared']} names compared; missing: {numbers['missing']}; "
        f"differing: {numbers['differing']}; intentional: {numbers['intentional']}; "
        f"extra here: {numbers['extra']}"
    )


def grouped(diffs: Iterable[Difference]) -> list[str]:
    """Lines under a module heading, then a class sub-heading; each line carries the full key
    (what an exception row needs)."""
    lines: list[str] = []
    ordered = sorted(diffs, key=lambda d: (d.module, d.owner, d.key))
    module = owner = None
    for diff in ordered:
        if diff.module != module:
            module, owner = diff.module, None
            lines += ["", diff.module]
        if diff.owner != owner:
            owner = diff.owner
            if owner:
                lines.append(f"  {owner}")
        indent = "    " if diff.owner else "  "
        via = ""
        if diff.via:
            word = "also on" if diff.on_owner else "found on"
            via = f"  ({word}: {', '.join(sorted(diff.via))})"
        lines.append(f"{indent}{diff.category:<9} {diff.key}  -  {diff.message}{via}")
    return lines


def format_report(comparison: Comparison, header: list[str]) -> str:
    diffs = list(comparison.differences.values())
    gaps = [d for d in diffs if d.why is None and d.category != "extra"]
    intentional = [d for d in diffs if d.why is not None]
    extra = [d for d in diffs if d.category == "extra"]
    lines = list(header)
    lines += ["", f"== Missing or different here ({len(gaps)})"] + grouped(gaps)
    lines += ["", f"== Intentional (docs/compatibility.md, {SECTION[3:]!r}) ({len(intentional)})"]
    lines += [
        f"  {d.key}  -  {d.message}  [why: {d.why}]"
        for d in sorted(intentional, key=lambda d: d.key)
    ]
    lines += ["", f"== Extra here, fine ({len(extra)})"] + grouped(extra)
    if comparison.stale:
        lines += ["", "== Exception rows that match no difference (remove them)"]
        lines += [f"  {key}" for key in comparison.stale]
    if comparison.notes:
        lines += ["", "== Notes"] + [f"  {note}" for note in comparison.notes]
    lines += ["", summary_line(counts(comparison))]
    return "\n".join(lines) + "\n"


def as_json(comparison: Comparison, meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "meta": meta,
        "counts": counts(comparison),
        "differences": [
            dataclasses.asdict(d)
            for d in sorted(comparison.differences.values(), key=lambda d: d.key)
        ],
        "stale_exceptions": comparison.stale,
        "notes": comparison.notes,
    }
