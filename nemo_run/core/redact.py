"""Names that hold secrets, and masking of their values wherever text leaves the process."""

from __future__ import annotations

import re
from collections.abc import Mapping

SECRET_NAME = re.compile(r"(secret|token|password|passwd|api_?key|credential|private_?key)", re.IGNORECASE)
MASK = "***"


def is_secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(name))


def redact_env(env: Mapping[str, str]) -> dict[str, str]:
    """A copy of `env` with secret-looking values masked, for dry-run text and logs."""
    return {k: (MASK if is_secret_name(k) and v else v) for k, v in env.items()}
