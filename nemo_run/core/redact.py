"""Names that hold secrets, and masking of their values wherever text leaves the process."""

from __future__ import annotations

import base64
import json
import re
import shlex
import zlib
from collections.abc import Mapping
from typing import Any, overload

# "token" alone, not "tokens"/"tokenizer" (max_tokens and tokenizer paths are not secrets).
SECRET_NAME = re.compile(
    r"(secret|token(?![a-z])|password|passwd|api[_-]?key|credential|private[_-]?key)", re.IGNORECASE
)
MASK = "***"


def is_secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(name))


def redact_env(env: Mapping[str, str]) -> dict[str, str]:
    """A copy of `env` with secret-looking values masked, for dry-run text and logs."""
    return {k: (MASK if is_secret_name(k) and v else v) for k, v in env.items()}


# -- values: everything the project writes (records, experiment files, dry-run text) --------
PARTIAL_RUNNER = "nemo_run.core.runners.partial"
_FLAG = re.compile(r"^(--?[A-Za-z0-9][\w.-]*)(=(.*))?$", re.DOTALL)
_ASSIGNMENT = re.compile(r"^([A-Za-z_][\w.]*)=(.*)$", re.DOTALL)
_FIDDLE_NAME = re.compile(r"^(?:Attr\(name|Key\(key)='(.*)'\)$")
_TEXT_FLAG = re.compile(
    r"(--?[\w.-]*(?:secret|token(?![a-z])|password|passwd|api[_-]?key|credential|private[_-]?key)"
    r"[\w.-]*)"
    r"(=|\s+)(\"[^\"]*\"|'[^']*'|[^\s'\"]+)",
    re.IGNORECASE,
)
_TEXT_ASSIGNMENT = re.compile(
    r"\b([A-Za-z_]\w*?(?:SECRET|TOKEN(?![a-z])|PASSWORD|PASSWD|API_?KEY|CREDENTIAL|PRIVATE_?KEY)\w*)="
    r"(\"[^\"]*\"|'[^']*'|[^\s'\"]+)",
    re.IGNORECASE,
)
_TEXT_PAYLOAD = re.compile(re.escape(PARTIAL_RUNNER) + r"(\s+['\"]?)([A-Za-z0-9_=-]{16,})")


def _flag_name(text: str) -> str | None:
    match = _FLAG.match(text)
    return match.group(1).lstrip("-") if match else None


def redact_args(args: list[str]) -> list[str]:
    """A copy of a command line with secret values masked: the value after a secret-looking
    flag (`--api-key X`, `--token=X`), `NAME=VALUE` with a secret-looking NAME, and the
    secret keyword arguments inside a Partial payload (`-m nemo_run.core.runners.partial P`)."""
    out: list[str] = []
    mask_next = False
    for index, arg in enumerate(args):
        if not isinstance(arg, str):
            out.append(arg)
            continue
        if mask_next:
            out.append(MASK if arg else arg)
            mask_next = False
            continue
        flag = _FLAG.match(arg)
        if flag and is_secret_name(flag.group(1)):
            if flag.group(2) is None:
                mask_next = True
                out.append(arg)
            else:
                out.append(f"{flag.group(1)}={MASK}")
            continue
        assignment = _ASSIGNMENT.match(arg)
        if assignment and is_secret_name(assignment.group(1)) and assignment.group(2):
            out.append(f"{assignment.group(1)}={MASK}")
            continue
        if index and args[index - 1] == PARTIAL_RUNNER:
            out.append(redact_partial_payload(arg))
            continue
        out.append(arg)
    return out


def redact_text(text: str) -> str:
    """Mask secrets in free text such as a shell script or a command line."""
    text = _TEXT_FLAG.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    text = _TEXT_ASSIGNMENT.sub(lambda m: f"{m.group(1)}={MASK}", text)
    return _TEXT_PAYLOAD.sub(
        lambda m: f"{PARTIAL_RUNNER}{m.group(1)}{redact_partial_payload(m.group(2))}", text
    )


def redact_partial_payload(payload: str) -> str:
    """The Partial payload with every secret-looking keyword argument masked (still valid to
    decode); unchanged when it holds none, and a placeholder when it cannot be read."""
    try:
        outer = json.loads(zlib.decompress(base64.urlsafe_b64decode(payload.encode("ascii"))))
        config = json.loads(outer["config"])
    except (ValueError, KeyError, TypeError, zlib.error):
        return payload if len(payload) < 16 else "<unreadable task payload>"
    if not _mask_fiddle(config):
        return payload
    outer["config"] = json.dumps(config)
    return base64.urlsafe_b64encode(zlib.compress(json.dumps(outer).encode(), 9)).decode("ascii")


def _mask_fiddle(node: object) -> bool:
    """Mask leaves under secret-looking argument names in fiddle's JSON; True if any changed."""
    changed = False
    if isinstance(node, dict):
        for value in node.values():
            changed |= _mask_fiddle(value)
    elif isinstance(node, list):
        name = _FIDDLE_NAME.match(node[0]) if len(node) == 2 and isinstance(node[0], str) else None
        if name and is_secret_name(name.group(1)) and isinstance(node[1], dict):
            if node[1].get("type") == "leaf" and node[1].get("value") not in (None, "", MASK):
                node[1]["value"] = MASK
                return True
        for value in node:
            changed |= _mask_fiddle(value)
    return changed


@overload
def redact(value: Mapping[str, Any]) -> dict[str, Any]: ...
@overload
def redact(value: object) -> object: ...
def redact(value: object) -> object:
    """A copy of any JSON-like value with secrets masked: values under secret-looking keys,
    `{"name": SECRET_NAME, "value": ...}` items (Run:ai, Lepton, Kubernetes env lists), and
    secrets inside command lines and strings. A mapping comes back as a dict."""
    if isinstance(value, Mapping):
        name = value.get("name")
        out: dict[object, object] = {}
        for key, item in value.items():
            if isinstance(key, str) and is_secret_name(key) and item not in (None, "", [], {}):
                out[key] = MASK
            elif key == "value" and isinstance(name, str) and is_secret_name(name) and item:
                out[key] = MASK
            else:
                out[key] = redact(item)
        return out
    if isinstance(value, (list, tuple)):
        items: list[object] = [redact(v) for v in value]
        strings = [v for v in items if isinstance(v, str)]
        return redact_args(strings) if len(strings) == len(items) else items
    if isinstance(value, str):
        return redact_text(value) if ("=" in value or "-" in value) else value
    return value


# -- secret arguments: out of scripts and records, into the job's environment ---------------
ARG_ENV_PREFIX = "NEMORUN_ARG_"
_REFERENCE = re.compile(r"\$\{(" + ARG_ENV_PREFIX + r"\d+)\}")


def split_secret_args(args: list[str]) -> tuple[list[str], dict[str, str]]:
    """(`args` with every secret value replaced by a reference `${NEMORUN_ARG_<i>}`, i being
    the argument's index; the environment holding those values).

    A launcher writes the references into the job's script (`shell_join_references`) and
    sends the environment through the platform's API only, so no secret reaches a shared
    folder or a job record. Secret values: the argument after a secret-looking flag
    (`--token X`), the value of `--api-key=X`, of `KEY=X` with a secret-looking KEY, and a
    whole Partial payload (`-m nemo_run.core.runners.partial P`) holding secret-looking kwargs.
    """
    out: list[str] = []
    env: dict[str, str] = {}
    take_next = False
    for index, arg in enumerate(args):
        name = f"{ARG_ENV_PREFIX}{index}"
        ref = "${" + name + "}"
        if take_next:
            take_next = False
            if arg:
                env[name] = arg
                out.append(ref)
                continue
        flag = _FLAG.match(arg)
        if flag and is_secret_name(flag.group(1)):
            if flag.group(2) is None:
                take_next = True
            elif flag.group(3):
                env[name] = flag.group(3)
                out.append(f"{flag.group(1)}={ref}")
                continue
            out.append(arg)
            continue
        assignment = None if flag else _ASSIGNMENT.match(arg)
        if assignment and is_secret_name(assignment.group(1)) and assignment.group(2):
            env[name] = assignment.group(2)
            out.append(f"{assignment.group(1)}={ref}")
            continue
        if index and args[index - 1] == PARTIAL_RUNNER and redact_partial_payload(arg) != arg:
            env[name] = arg
            out.append(ref)
            continue
        out.append(arg)
    return out, env


def shell_join_references(args: list[str], env: Mapping[str, str]) -> str:
    """A shell command line for `split_secret_args` output: every word quoted, except the
    references it made (`${NEMORUN_ARG_<i>}` in argument i, named in `env`), which become
    `"${NEMORUN_ARG_<i>}"`, expanded when the script runs."""
    words = []
    for index, arg in enumerate(args):
        own = f"{ARG_ENV_PREFIX}{index}"
        pieces = _REFERENCE.split(arg) if own in env else [arg]
        if len(pieces) == 1:
            words.append(shlex.quote(arg))
            continue
        word = ""
        for position, piece in enumerate(pieces):
            if position % 2 and piece == own:
                word += f'"${{{piece}}}"'
            elif position % 2:
                word += shlex.quote("${" + piece + "}")
            elif piece:
                word += shlex.quote(piece)
        words.append(word)
    return " ".join(words)


def mask_references(args: list[str], env: Mapping[str, str]) -> list[str]:
    """`split_secret_args` output with each reference replaced by a masked value: the copy a
    job record or a dry run shows (a Partial payload keeps its shape, secrets masked)."""
    out = []
    for index, arg in enumerate(args):
        own = f"{ARG_ENV_PREFIX}{index}"
        if own not in env:
            out.append(arg)
        elif arg == "${" + own + "}" and index and args[index - 1] == PARTIAL_RUNNER:
            out.append(redact_partial_payload(env[own]))
        else:
            out.append(arg.replace("${" + own + "}", MASK))
    return out


def is_secret_arg_env(name: str) -> bool:
    """An environment variable `split_secret_args` made: its value is always a secret."""
    return name.startswith(ARG_ENV_PREFIX) and name[len(ARG_ENV_PREFIX) :].isdigit()
