"""The three pages as HTML strings (escaped here, once): the experiment list, one experiment
(DAG, tasks, timeline) and one job (record, launch text, live logs). The element with
`data-live` is re-fetched by the page's script every few seconds; the log pane is not in it.
"""

from __future__ import annotations

import datetime
from html import escape
from urllib.parse import quote, urlencode

from nemo_run.core.states import FINAL_JOB_STATES
from nemo_run.dashboard.svg import _span, dag_svg, timeline_svg
from nemo_run.dashboard.views import TASK_STATES, ListPage, TaskRow
from nemo_run.run.experiment_files import ExperimentRecord
from nemo_run.run.torchx_backend.schedulers.backends import BACKENDS


def when(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def job_href(handle: str) -> str:
    return "/job?" + urlencode({"handle": handle})


def exp_href(exp_id: str) -> str:
    return "/experiment/" + quote(exp_id, safe="")


def badge(state: str, n: int | None = None) -> str:
    count = f" {n}" if n is not None else ""
    return f'<span class="badge s-{escape(state)}">{escape(state)}{count}</span>'


def layout(title: str, body: str, csrf: str, read_only: bool) -> str:
    mode = '<span class="ro">read-only</span>' if read_only else ""
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width'><title>{escape(title)} · nemorun</title>"
        f"<meta name='csrf' content='{escape(csrf)}'>"
        "<link rel='stylesheet' href='/static/dashboard.css'>"
        "<script src='/static/dashboard.js' defer></script></head><body>"
        f"<header><a class='brand' href='/'>nemorun dashboard</a>{mode}</header>"
        f"<main>{body}</main></body></html>"
    )


def cancel_form(target: str, value: str, label: str, csrf: str, read_only: bool) -> str:
    """A cancel button that opens a confirmation dialog; the dialog's form POSTs."""
    if read_only:
        return ""
    return (
        '<span class="cancel">'
        f'<button type="button" class="danger" data-confirm="{escape(label)}">Cancel…</button>'
        '<dialog class="confirm"><form method="post" action="/cancel">'
        f"<p>{escape(label)}?</p>"
        f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
        f'<input type="hidden" name="{escape(target)}" value="{escape(value)}">'
        '<button type="submit" class="danger" name="confirm" value="yes">Yes, cancel</button> '
        '<button type="button" class="close">Keep running</button></form></dialog></span>'
    )


# -- the experiment list ------------------------------------------------------------------
def list_page(data: ListPage) -> str:
    f = data.filters
    backend_options = "".join(
        f'<option value="{escape(b.short)}"{" selected" if f["backend"] == b.short else ""}>'
        f"{escape(b.short)}</option>"
        for b in BACKENDS
    )
    state_options = "".join(
        f"<option{' selected' if f['state'] == s else ''}>{escape(s)}</option>" for s in TASK_STATES
    )
    form = (
        '<form class="filters" method="get" action="/">'
        f'<input name="title" placeholder="title contains" value="{escape(f["title"])}">'
        f'<select name="backend"><option value="">any backend</option>{backend_options}</select>'
        f'<select name="state"><option value="">any state</option>{state_options}</select>'
        "<button>Filter</button></form>"
    )
    rows = "".join(
        f'<tr data-id="{escape(r.experiment.id)}">'
        f'<td><a href="{exp_href(r.experiment.id)}">{escape(r.experiment.title)}</a></td>'
        f'<td class="mono">{escape(r.experiment.id)}</td>'
        f"<td>{when(r.experiment.created_at)}</td>"
        f"<td>{escape(', '.join(r.experiment.backends))}</td>"
        f'<td class="counts">{"".join(badge(s, n) for s, n in sorted(r.counts.items()))}</td></tr>'
        for r in data.rows
    )
    table = (
        '<table class="list"><thead><tr><th>title</th><th>id</th><th>created</th>'
        f"<th>backends</th><th>tasks</th></tr></thead><tbody>{rows}</tbody></table>"
        if data.rows
        else '<p class="empty">No experiment matches.</p>'
    )
    return (
        f"<h1>Experiments <small id='total'>{data.total}</small></h1>{form}"
        f"<div data-live>{table}{_pager(data)}</div>"
    )


def _pager(data: ListPage) -> str:
    def link(page: int, text: str) -> str:
        query = urlencode({**{k: v for k, v in data.filters.items() if v}, "page": page})
        return f'<a href="/?{query}">{text}</a>'

    prev = link(data.page - 1, "← newer") if data.page > 1 else ""
    nxt = link(data.page + 1, "older →") if data.page < data.pages else ""
    return f'<nav class="pager">{prev} <span>page {data.page} of {data.pages}</span> {nxt}</nav>'


# -- one experiment -----------------------------------------------------------------------
def experiment_page(
    record: ExperimentRecord, rows: list[TaskRow], csrf: str, read_only: bool
) -> str:
    running = any(r.state not in FINAL_JOB_STATES and r.state != "SKIPPED" for r in rows)
    cancel = (
        cancel_form("experiment", record.id, f"Cancel every task of {record.id}", csrf, read_only)
        if running and not record.written_by
        else ""
    )
    task_rows = "".join(
        f'<tr data-task="{escape(r.id)}"><td>{escape(r.id)}</td><td>{badge(r.state)}</td>'
        f"<td>{escape(r.backend)}</td>"
        f'<td class="mono">{_job_link(r)}</td>'
        f"<td>{when(r.launched_at)}</td><td>{when(r.ended_at)}</td>"
        f"<td>{_span(r.duration) if r.duration is not None else ''}</td>"
        f"<td>{'' if r.exit_code is None else r.exit_code}</td>"
        f"<td>{escape(r.reason or '')}</td></tr>"
        for r in rows
    )
    return (
        f"<h1>{escape(record.title)} <small class='mono'>{escape(record.id)}</small></h1>"
        f"<div class='line'>created {when(record.created_at)}"
        f"{' · written by ' + escape(record.written_by) if record.written_by else ''} {cancel}</div>"
        "<div data-live>"
        f"<section><h2>Tasks</h2>{dag_svg(rows, lambda r: job_href(r.handle) if r.handle else None)}"
        '<table class="tasks"><thead><tr><th>task</th><th>state</th><th>backend</th>'
        "<th>handle</th><th>started</th><th>ended</th><th>duration</th><th>exit</th>"
        f"<th>reason</th></tr></thead><tbody>{task_rows}</tbody></table></section>"
        f"<section><h2>Timeline</h2>{timeline_svg(rows, record.created_at)}</section></div>"
    )


def _job_link(row: TaskRow) -> str:
    if not row.handle:
        return ""
    return f'<a href="{escape(job_href(row.handle))}">{escape(row.handle)}</a>'


# -- one job ------------------------------------------------------------------------------
def job_page(job: dict, csrf: str, read_only: bool) -> str:
    record = job["record"]
    handle = job["handle"]
    final = record.state in FINAL_JOB_STATES
    owner = job["experiment"]
    parent = (
        f'<p>task <b>{escape(owner[1])}</b> of <a href="{exp_href(owner[0])}">{escape(owner[0])}</a></p>'
        if owner
        else ""
    )
    cancel = "" if final else cancel_form("handle", handle, f"Cancel {handle}", csrf, read_only)
    launch = (
        "".join(
            f"<details open><summary>{escape(what)}</summary><pre>{escape(text)}</pre></details>"
            for what, text in job["launch"]
        )
        or '<p class="empty">No launch text kept for this job.</p>'
    )
    replicas = "".join(f"<option>{escape(r)}</option>" for r in job["replicas"])
    return (
        f"<h1>Job <small class='mono'>{escape(handle)}</small></h1>{parent}"
        f'<div data-live><div class="line">state {badge(record.state)} · started {when(record.created_at)}'
        f"{' · ended ' + when(record.data.get('ended_at')) if record.data.get('ended_at') else ''}"
        f"{' · exit ' + escape(str(record.data.get('exit_code'))) if record.data.get('exit_code') is not None else ''}"
        f" {cancel}</div></div>"
        f'<section><h2>Logs</h2><form class="filters" id="logsel">'
        f'<select name="replica"><option value="">all replicas</option>{replicas}</select>'
        '<select name="stream"><option value="">stdout+stderr</option><option>stdout</option>'
        "<option>stderr</option></select></form>"
        f'<pre id="log" class="log" data-handle="{escape(handle)}"></pre>'
        '<p id="logstate" class="sub">connecting…</p></section>'
        f"<section><h2>Launch</h2>{launch}</section>"
        f"<section><h2>Record</h2><pre>{escape(job['record_json'])}</pre></section>"
    )


def error_page(message: str) -> str:
    return f"<h1>Not found</h1><p class='error'>{escape(message)}</p><p><a href='/'>All experiments</a></p>"
