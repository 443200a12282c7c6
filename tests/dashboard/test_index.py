"""The dashboard's experiment index: incremental, and paged without reading experiment files."""

from __future__ import annotations

import os
import shutil

from nemo_run.core.store import JobRecord, get_store
from nemo_run.dashboard.index import ExperimentIndex
from nemo_run.dashboard.svg import dag_svg, layers
from nemo_run.dashboard.views import Interest, TaskRow, Views
from nemo_run.run.experiment_files import ExperimentRecord, TaskEntry, experiments_root


def make(home: str, title: str, n: int, *, done: bool = True) -> ExperimentRecord:
    exp_id = f"{title}_{n:04d}"
    tasks = [
        TaskEntry(
            "a", "local_persistent", ["a"], [], {}, f"local_persistent://nemo_run/a-{exp_id}"
        ),
        TaskEntry("b", "local_persistent", ["b"], ["a"]),
    ]
    record = ExperimentRecord(
        exp_id, title, os.path.join(experiments_root(home), title, exp_id), 1000.0 + n, tasks
    )
    record.launch_done = done
    record.save()
    get_store().put(
        JobRecord("local_persistent", f"a-{exp_id}", state="FAILED", experiment_id=exp_id)
    )
    return record


def test_refresh_reads_only_what_changed(nemorun_home):
    home = str(nemorun_home)
    for n in range(3):
        make(home, "x", n)
    index = ExperimentIndex(home)
    assert index.refresh() == 3
    assert index.refresh() == 0  # nothing changed: no file read
    make(home, "x", 3)
    unsettled = make(home, "y", 4, done=False)
    assert index.refresh() == 2
    unsettled.launch_done = True
    unsettled.save()
    os.utime(os.path.join(unsettled.dir, "experiment.json"), (5000, 5000))
    assert index.refresh() == 1  # a launching experiment's file is re-read when it changes
    assert index.refresh() == 0
    shutil.rmtree(os.path.join(experiments_root(home), "x", "x_0001"))
    index.refresh()
    rows, total = index.page(limit=2)
    assert total == 4 and [r.id for r in rows] == ["y_0004", "x_0003"]
    assert index.page(title="y")[1] == 1 and index.page(title="%")[1] == 0


def test_views_count_states_and_filter(nemorun_home):
    home = str(nemorun_home)
    make(home, "x", 0)
    index = ExperimentIndex(home)
    index.refresh()
    views = Views(index, Interest())
    page = views.experiments()
    assert page.total == 1 and page.rows[0].counts == {"FAILED": 1, "WAITING": 1}
    assert views.experiments(state="failed").total == 1
    assert views.experiments(state="RUNNING").total == 0
    assert views.experiments(backend="docker").total == 0


def test_dag_layers_and_a_cycle_is_cut():
    rows = [
        TaskRow("a", "SUCCEEDED", "local", None, [], None),
        TaskRow("b", "RUNNING", "local", None, ["a"], None),
        TaskRow("c", "WAITING", "local", None, ["a", "b"], None),
        TaskRow("d", "WAITING", "local", None, ["e"], None),
        TaskRow("e", "WAITING", "local", None, ["d"], None),  # a hand-edited cycle
    ]
    depth = layers(rows)
    assert (depth["a"], depth["b"], depth["c"]) == (0, 1, 2)
    svg = dag_svg(rows, lambda r: None)
    assert svg.count('class="edge"') == 5
