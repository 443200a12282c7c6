"""States of jobs given by app handle, for everything in this process that waits on jobs (the
experiment driver, `Experiment.wait`, `run.run`): each handle goes to its backend's watcher
(`schedulers/watcher.py`), so waiting on a hundred jobs costs one list request per interval,
not a hundred.
"""

from __future__ import annotations

from collections.abc import Iterable

from torchx.specs import parse_app_handle

from nemo_run.run.torchx_backend.schedulers.watcher import Seen, watcher


def _parse(handle: str) -> tuple[str, str]:
    """(scheduler name, app id) of a handle `scheduler://session/app_id`."""
    parsed = parse_app_handle(handle)
    return parsed.scheduler_backend, parsed.app_id


def poll_handles(handles: Iterable[str]) -> dict[str, Seen]:
    """The states of jobs given by handle, each backend refreshed by its watcher when due."""
    by_backend: dict[str, list[tuple[str, str]]] = {}
    for handle in handles:
        scheduler, app_id = _parse(handle)
        by_backend.setdefault(scheduler, []).append((handle, app_id))
    out: dict[str, Seen] = {}
    for scheduler, pairs in by_backend.items():
        seen = watcher(scheduler).poll(app_id for _, app_id in pairs)
        out.update({handle: seen[app_id] for handle, app_id in pairs})
    return out


def seconds_to_next(handles: Iterable[str]) -> float:
    """How long until any of these jobs' watchers refreshes next."""
    names = {_parse(h)[0] for h in handles}
    return min((watcher(n).seconds_to_next() for n in names), default=0.0)
