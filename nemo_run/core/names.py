"""Names that become folder names (experiment titles, task names): checked once, here.

A title or task name is a single path component under the home folder, so anything that
could leave the folder, hide in it, or collide with the files an experiment keeps there is
refused before anything is written.
"""

from __future__ import annotations

from nemo_run.exceptions import ConfigError

MAX_NAME_BYTES = 200  # leaves room in a 255-byte file name for the id's date and suffix
# Files an experiment keeps beside its task folders.
RESERVED_TASK_NAMES = frozenset({"experiment.json", "cancel", "driver.log"})


def check_folder_name(value: object, what: str, *, reserved: frozenset[str] = frozenset()) -> str:
    """The name with surrounding blanks removed; ConfigError naming `what` and the fix."""
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be a string, got {type(value).__name__}")
    name = value.strip()
    problem = None
    if not name:
        problem = "is empty"
    elif name in (".", ".."):
        problem = "names a folder itself ('.' or '..')"
    elif "/" in name or "\\" in name:
        problem = "holds a path separator ('/' or '\\\\')"
    elif any(ord(c) < 32 or ord(c) == 127 for c in name):
        problem = "holds a control character (NUL, newline, ...)"
    elif len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        problem = f"is longer than {MAX_NAME_BYTES} bytes"
    elif name in reserved or any(name.startswith(f"{r}.") for r in reserved if "." in r):
        problem = f"is reserved for the experiment's own files ({', '.join(sorted(reserved))})"
    if problem:
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise ConfigError(
            f"{what} {shown} {problem}; pick a short name of letters, digits, "
            "'-', '_' or '.', e.g. 'pretrain-llama'"
        )
    return name
