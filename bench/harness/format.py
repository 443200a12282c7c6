"""How a figure is shown in the table and in the progress lines."""

from __future__ import annotations

import math
from typing import Any


def fmt(value: Any) -> str:
    """Three significant digits or so; booleans as yes/NO so a failure stands out."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        a = abs(value)
        if a >= 100:
            return f"{value:.0f}"
        if a >= 10:
            return f"{value:.1f}"
        if a >= 1:
            return f"{value:.2f}"
        return f"{value:.3f}"
    return str(value)
