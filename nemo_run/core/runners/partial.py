"""Run a configured `Partial`/`Config` inside the job: `python -m nemo_run.core.runners.partial PAYLOAD`.

The payload is fiddle's JSON, zlib-compressed and base64-encoded into one argument. A
function defined in the launching script's `__main__` is found by loading that script
under the name `__mp_main__` (as multiprocessing does), so its `if __name__ == "__main__"`
block does not run again inside the job.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import sys
import zlib
from typing import Any

from nemo_run.exceptions import ConfigError

PAYLOAD_VERSION = 1


def encode(buildable: Any) -> str:
    """Serialize a fiddle buildable (and where its `__main__` lives) into one CLI argument."""
    from fiddle.experimental import serialization  # noqa: PLC0415 - fiddle (~0.3 s), only where a task is a Partial/Config

    try:
        config_json = serialization.dump_json(buildable)
    except Exception as e:  # fiddle raises several types for unserializable values
        raise ConfigError(
            f"cannot serialize the task for a separate process: {e}; arguments must be plain "
            "values, fiddle configs, or importable objects"
        ) from e
    main = sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None)
    payload = {
        "v": PAYLOAD_VERSION,
        "config": config_json,
        "main": os.path.abspath(main_file) if main_file and '"__main__"' in config_json else None,
    }
    return base64.urlsafe_b64encode(zlib.compress(json.dumps(payload).encode(), 9)).decode("ascii")


def decode(text: str) -> Any:
    """Rebuild the buildable from `encode`'s output (importing the launcher's main file if needed)."""
    from fiddle.experimental import serialization  # noqa: PLC0415 - fiddle (~0.3 s), only where a task is a Partial/Config

    payload = json.loads(zlib.decompress(base64.urlsafe_b64decode(text.encode("ascii"))))
    if payload.get("v") != PAYLOAD_VERSION:
        raise SystemExit(f"nemo_run: payload version {payload.get('v')} is not supported here")
    if payload.get("main"):
        _load_main(payload["main"])
    return serialization.load_json(payload["config"])


_loading_main: str | None = None  # the launching script while this job re-imports it


def refuse_launch_while_loading_main() -> None:
    """Called by every launch: inside a job that is re-importing its launching script, a launch
    at the script's top level would start the job again (and again); fail at once instead, as
    multiprocessing does, and say how to fix the script."""
    if _loading_main is not None:
        raise ConfigError(
            f"{_loading_main} launches a job at import time, so it ran again inside its own job "
            "(the job loads it to find your function); put the launch under "
            '`if __name__ == "__main__":` so it runs only when you start the script'
        )


def _load_main(path: str) -> None:
    global _loading_main
    spec = importlib.util.spec_from_file_location("__mp_main__", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"nemo_run: cannot load the launching script {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["__mp_main__"] = module
    sys.path.insert(0, os.path.dirname(path))
    _loading_main = path
    try:
        spec.loader.exec_module(module)
    except ConfigError as e:
        if _loading_main is not None and "launches a job at import time" in str(e):
            raise SystemExit(f"nemo_run: {e}") from None
        raise
    finally:
        _loading_main = None
    sys.modules["__main__"] = module


def run(text: str) -> Any:
    """Build the configuration and, for a Partial, call what it builds."""
    import fiddle as fdl  # noqa: PLC0415 - fiddle (~0.3 s), only where a task is a Partial/Config

    buildable = decode(text)
    built = fdl.build(buildable)
    return built() if isinstance(buildable, fdl.Partial) else built


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m nemo_run.core.runners.partial PAYLOAD", file=sys.stderr)
        return 2
    run(args[0])
    return 0


if __name__ == "__main__":
    # Run inside the module as imported by name, not this `__main__` copy, so that launches
    # made while loading the user's script see this module's state.
    from nemo_run.core.runners import partial as _imported

    sys.exit(_imported.main())
