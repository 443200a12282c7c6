"""The task DAG and the timeline of an experiment as server-rendered SVG (no script, no
layout library): tasks in layers by their longest dependency chain, arrows from each
dependency to its dependant, boxes coloured by state through the page's CSS classes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from html import escape

from nemo_run.dashboard.views import TaskRow

BOX_W, BOX_H, GAP_X, GAP_Y, PAD = 180, 46, 60, 18, 10
ROW_H, LABEL_W, BAR_W = 26, 170, 640


def layers(rows: list[TaskRow]) -> dict[str, int]:
    """Each task's layer: 0 without (known) dependencies, else one past its deepest one.
    A cycle (never written by nemo_run, but a hand-edited file may hold one) is cut."""
    known = {r.id: r for r in rows}
    depth: dict[str, int] = {}

    def visit(task: str, path: frozenset[str]) -> int:
        if task in depth:
            return depth[task]
        deps = [d for d in known[task].dependencies if d in known and d not in path]
        depth[task] = 1 + max((visit(d, path | {task}) for d in deps), default=-1)
        return depth[task]

    for row in rows:
        visit(row.id, frozenset())
    return depth


def dag_svg(rows: list[TaskRow], link: Callable[[TaskRow], str | None]) -> str:
    """The DAG: one box per task (id, state, backend), an arrow per dependency."""
    depth = layers(rows)
    columns: dict[int, list[TaskRow]] = {}
    for row in rows:
        columns.setdefault(depth[row.id], []).append(row)
    where: dict[str, tuple[int, int]] = {}
    for col, members in columns.items():
        for k, row in enumerate(members):
            where[row.id] = (PAD + col * (BOX_W + GAP_X), PAD + k * (BOX_H + GAP_Y))
    width = PAD * 2 + max(len(columns), 1) * (BOX_W + GAP_X) - GAP_X
    height = PAD * 2 + max((len(m) for m in columns.values()), default=1) * (BOX_H + GAP_Y) - GAP_Y
    parts = [
        f'<svg class="dag" role="img" aria-label="task graph" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'class="arrowhead"/></marker></defs>',
    ]
    for row in rows:
        x2, y2 = where[row.id]
        for dep in row.dependencies:
            if dep in where:
                x1, y1 = where[dep]
                sx, sy, ex, ey = x1 + BOX_W, y1 + BOX_H // 2, x2, y2 + BOX_H // 2
                mid = (sx + ex) // 2
                parts.append(
                    f'<path class="edge" d="M{sx},{sy} C{mid},{sy} {mid},{ey} {ex},{ey}" '
                    'marker-end="url(#arrow)"/>'
                )
    for row in rows:
        x, y = where[row.id]
        box = (
            f'<g class="node s-{escape(row.state)}" data-task="{escape(row.id)}">'
            f"<title>{escape(row.id)}: {escape(row.state)}</title>"
            f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6"/>'
            f'<text x="{x + 10}" y="{y + 19}" class="name">{escape(_clip(row.id, 22))}</text>'
            f'<text x="{x + 10}" y="{y + 36}" class="sub">{escape(row.state)} · '
            f"{escape(_clip(row.backend, 14))}</text></g>"
        )
        href = link(row)
        parts.append(f'<a href="{escape(href)}">{box}</a>' if href else box)
    parts.append("</svg>")
    return "".join(parts)


def timeline_svg(rows: list[TaskRow], created_at: float, now: float | None = None) -> str:
    """One row per task: waiting from the experiment's creation to its launch, then running
    until it ended (or now); a tick every fifth of the span."""
    now = time.time() if now is None else now
    ends = [r.ended_at for r in rows if r.ended_at] + [r.launched_at for r in rows if r.launched_at]
    unfinished = any(
        r.ended_at is None and r.state not in ("SKIPPED", "CANCELLED", "FAILED", "SUCCEEDED")
        for r in rows
    )
    stop = max([*ends, created_at + 1.0] + ([now] if unfinished else []))
    span = max(stop - created_at, 1.0)

    def x(t: float) -> float:
        return LABEL_W + (min(max(t, created_at), stop) - created_at) / span * BAR_W

    height = ROW_H * len(rows) + 24
    width = LABEL_W + BAR_W + 20
    parts = [
        f'<svg class="timeline" role="img" aria-label="timeline" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for k in range(6):
        tx = LABEL_W + BAR_W * k / 5
        parts.append(f'<line class="tick" x1="{tx:.1f}" y1="0" x2="{tx:.1f}" y2="{height - 16}"/>')
        parts.append(
            f'<text class="sub" x="{tx:.1f}" y="{height - 4}" text-anchor="middle">+{_span(span * k / 5)}</text>'
        )
    for k, row in enumerate(rows):
        y = k * ROW_H + 4
        parts.append(f'<text class="name" x="4" y="{y + 15}">{escape(_clip(row.id, 22))}</text>')
        start = row.launched_at
        wait_end = start if start is not None else (now if row.state == "WAITING" else created_at)
        if wait_end > created_at:
            parts.append(
                f'<rect class="wait" x="{x(created_at):.1f}" y="{y + 4}" '
                f'width="{max(x(wait_end) - x(created_at), 1):.1f}" height="{ROW_H - 10}">'
                f"<title>{escape(row.id)} waited {_span(wait_end - created_at)}</title></rect>"
            )
        if start is not None:
            end = row.ended_at if row.ended_at is not None else (now if unfinished else start)
            parts.append(
                f'<rect class="run s-{escape(row.state)}" x="{x(start):.1f}" y="{y + 2}" '
                f'width="{max(x(end) - x(start), 2):.1f}" height="{ROW_H - 6}">'
                f"<title>{escape(row.id)} {escape(row.state)} for {_span(end - start)}</title></rect>"
            )
    parts.append("</svg>")
    return "".join(parts)


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _span(seconds: float) -> str:
    """A short duration: 42s, 3m05s, 2h10m."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
