"""Human output for `Experiment.status()` and the CLI: rich tables, loaded only when printing.

Every cell is a `rich.text.Text`, never markup: names, titles and messages come from users
and backends, and `[bold red]x` must print as written. Only `state_text` adds a style.

rich (~0.1 s to import) is imported inside the functions that print, so code that only
launches or reads states (and every CLI command given `--json`) never loads it.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from nemo_run.core.states import State

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

    from nemo_run.run.experiment_files import ExperimentRecord

STATE_STYLES: dict[str, str] = {
    State.SUCCEEDED.value: "green",
    State.FAILED.value: "red",
    State.CANCELLED.value: "yellow",
    State.RUNNING.value: "cyan",
    State.SKIPPED.value: "magenta",
    State.WAITING.value: "dim",
}


def when(ts: float | None) -> str:
    """Local date and time to the second: tables of many days stay unambiguous."""
    if not ts:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def console(stderr: bool = False) -> Console:
    """A rich console that stays wide when piped, so handles are not folded mid-word."""
    from rich.console import Console  # noqa: PLC0415 - rich loads only when printing

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else int(os.environ.get("COLUMNS", "200"))
    return Console(file=stream, width=width)


def plain(value: Any) -> Text:
    """A value shown literally: markup-looking text stays text; None shows as '-'."""
    from rich.text import Text  # noqa: PLC0415 - rich loads only when printing

    if isinstance(value, Text):
        return value
    return Text("-" if value is None else str(value))


def state_text(state: str) -> Text:
    """A state in its colour (the state itself is never read as markup)."""
    from rich.text import Text  # noqa: PLC0415 - rich loads only when printing

    return Text(str(state), style=STATE_STYLES.get(str(state), ""))


def waiting(message: str) -> AbstractContextManager[Any]:
    """A spinner on stderr showing `message` (literally) while the block runs."""
    return console(stderr=True).status(plain(message))


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    """A table whose title and cells print literally (see `plain`); styled Text cells stay."""
    from rich.table import Table  # noqa: PLC0415 - rich loads only when printing

    table = Table(title=plain(title), title_justify="left")
    for column in columns:
        table.add_column(
            column, overflow="fold" if column == "note" else "ellipsis", no_wrap=column != "note"
        )
    for row in rows:
        table.add_row(*(plain(v) for v in row))
    console().print(table)


def print_experiment_status(record: ExperimentRecord, statuses: dict[str, dict[str, Any]]) -> None:
    """The status table of an experiment: one row per task."""
    rows = [
        [
            task_id,
            state_text(s["state"]),
            s["exit_code"],
            when(s["started_at"]),
            when(s["ended_at"]),
            s["handle"],
            s["reason"],
        ]
        for task_id, s in statuses.items()
    ]
    print_table(
        f"Experiment {record.id}  ({record.dir})",
        ["task", "state", "exit", "started", "ended", "handle", "note"],
        rows,
    )
