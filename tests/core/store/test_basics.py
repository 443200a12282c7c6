"""Job store basics: records in and out, filters, and where the file lives."""

from __future__ import annotations

import os
import sqlite3
import threading

import pytest

from nemo_run.config import set_nemorun_home
from nemo_run.core.store import STORE_FILENAME, JobRecord, get_store, store_path
from nemo_run.exceptions import UnknownJobError
from tests.core.store._helpers import close_thread_connections


def _record(app_id: str, backend: str = "local_persistent", **kw) -> JobRecord:
    return JobRecord(backend, app_id, **kw)


def _ids(records: list[JobRecord]) -> list[str]:
    return [r.app_id for r in records]


def test_put_get_round_trip_keeps_every_field():
    store = get_store()
    record = JobRecord(
        "skypilot",
        "app-1",
        session="exp-session",
        state="RUNNING",
        experiment_id="exp-7",
        log_dir="/logs/app-1",
        created_at=1000.5,
        updated_at=1001.25,
        data={"roles": ["trainer", "eval"], "nested": {"n": 3, "f": 0.5, "none": None}},
    )
    store.put(record)

    got = get_store().get("skypilot", "app-1")
    assert got == record
    assert got is not record
    assert got.handle == "skypilot://exp-session/app-1"


def test_get_unknown_is_none():
    store = get_store()
    assert store.get("local_persistent", "nope") is None
    store.put(_record("app-1"))
    assert store.get("docker_persistent", "app-1") is None  # same id, other backend


def test_put_replaces_and_put_many_can_keep_existing():
    store = get_store()
    store.put(_record("a", state="RUNNING"))
    store.put(_record("a", state="FAILED"))
    assert store.get("local_persistent", "a").state == "FAILED"
    assert len(store.list()) == 1

    added = store.put_many([_record("a", state="SUCCEEDED"), _record("b")], replace=False)
    assert added == 1
    assert store.get("local_persistent", "a").state == "FAILED"
    assert store.get("local_persistent", "b") is not None

    replaced = store.put_many([_record("a", state="SUCCEEDED"), _record("c")])
    assert replaced == 2
    assert store.get("local_persistent", "a").state == "SUCCEEDED"


def test_update_merges_data_and_changes_columns():
    store = get_store()
    store.put(_record("a", state="SUBMITTED", updated_at=5.0, data={"keep": 1, "change": "old"}))

    returned = store.update(
        "local_persistent",
        "a",
        data={"change": "new", "added": [1, 2]},
        state="RUNNING",
        log_dir="/logs/a",
    )
    stored = store.get("local_persistent", "a")
    assert stored == returned
    assert stored.state == "RUNNING"
    assert stored.log_dir == "/logs/a"
    assert stored.data == {"keep": 1, "change": "new", "added": [1, 2]}
    assert stored.updated_at > 5.0

    store.update("local_persistent", "a", state="SUCCEEDED")  # no data: data untouched
    assert store.get("local_persistent", "a").data == {"keep": 1, "change": "new", "added": [1, 2]}


def test_update_is_all_or_nothing():
    store = get_store()
    store.put(_record("a", state="RUNNING", data={"keep": 1}))

    with pytest.raises(TypeError):  # the data cannot be stored, so the state must not change either
        store.update("local_persistent", "a", data={"x": object()}, state="FAILED")
    with pytest.raises(TypeError):  # not an updatable column
        store.update("local_persistent", "a", backend="docker_persistent", state="FAILED")

    got = store.get("local_persistent", "a")
    assert (got.state, got.data) == ("RUNNING", {"keep": 1})


def test_update_unknown_raises_unknown_job_error():
    store = get_store()
    store.put(_record("a"))
    with pytest.raises(UnknownJobError, match="nope"):
        store.update("local_persistent", "nope", state="RUNNING")
    with pytest.raises(UnknownJobError):
        store.update("docker_persistent", "a", data={"x": 1})
    assert store.get("docker_persistent", "a") is None  # update never inserts
    assert _ids(store.list()) == ["a"]


def test_list_newest_first_with_filters():
    store = get_store()
    store.put_many(
        [
            _record("l1", created_at=1.0, state="RUNNING", experiment_id="e1"),
            _record("d1", "docker_persistent", created_at=2.0, state="RUNNING", experiment_id="e1"),
            _record("l2", created_at=3.0, state="FAILED", experiment_id="e2"),
            _record("s1", "skypilot", created_at=4.0, state="RUNNING"),
            _record("l3", created_at=5.0, state="RUNNING", experiment_id="e2"),
        ]
    )
    assert _ids(store.list()) == ["l3", "s1", "l2", "d1", "l1"]
    assert _ids(store.list("local_persistent")) == ["l3", "l2", "l1"]
    assert _ids(store.list(state="RUNNING")) == ["l3", "s1", "d1", "l1"]
    assert _ids(store.list(experiment_id="e1")) == ["d1", "l1"]
    assert _ids(store.list("local_persistent", state="RUNNING")) == ["l3", "l1"]
    assert _ids(store.list("local_persistent", state="RUNNING", experiment_id="e2")) == ["l3"]
    assert _ids(store.list(limit=2)) == ["l3", "s1"]
    assert _ids(store.list(state="RUNNING", limit=3)) == ["l3", "s1", "d1"]
    assert store.list("lepton") == []
    assert store.list(state="CANCELLED") == []


def test_find_by_app_id_across_backends():
    store = get_store()
    store.put(_record("shared", "local_persistent"))
    store.put(_record("shared", "docker_persistent"))
    store.put(_record("other", "skypilot"))

    found = store.find("shared")
    assert sorted(r.backend for r in found) == ["docker_persistent", "local_persistent"]
    assert all(r.app_id == "shared" for r in found)
    assert store.find("missing") == []


def test_delete():
    store = get_store()
    store.put(_record("a"))
    store.put(_record("a", "docker_persistent"))

    assert store.delete("local_persistent", "a") is True
    assert store.get("local_persistent", "a") is None
    assert store.get("docker_persistent", "a") is not None  # only that backend's record
    assert store.delete("local_persistent", "a") is False
    assert store.delete("lepton", "never") is False


def test_store_file_follows_set_nemorun_home(tmp_path):
    home_a, home_b = tmp_path / "a", tmp_path / "b"

    set_nemorun_home(home_a)
    assert store_path() == str(home_a / STORE_FILENAME)
    get_store().put(_record("in-a"))
    set_nemorun_home(home_b)
    assert get_store().location == str(home_b / STORE_FILENAME)
    get_store().put(_record("in-b"))

    assert _ids(get_store().list()) == ["in-b"]
    set_nemorun_home(home_a)
    assert _ids(get_store().list()) == ["in-a"]

    for home, app_id in ((home_a, "in-a"), (home_b, "in-b")):  # really two files
        with sqlite3.connect(home / STORE_FILENAME) as conn:
            assert conn.execute("SELECT app_id FROM jobs").fetchall() == [(app_id,)]


def test_get_store_honours_nemorun_home_changes(tmp_path, monkeypatch, nemorun_home):
    get_store().put(_record("first"))
    assert os.path.isfile(nemorun_home / STORE_FILENAME)

    other = tmp_path / "other-home"
    monkeypatch.setenv("NEMORUN_HOME", str(other))
    store = get_store()
    assert store.location == str(other / STORE_FILENAME)
    assert store.list() == []
    store.put(_record("second"))
    assert os.path.isfile(other / STORE_FILENAME)

    assert _ids(get_store(str(nemorun_home)).list()) == ["first"]  # explicit home argument


def test_missing_home_folder_is_created(tmp_path, monkeypatch):
    home = tmp_path / "not" / "yet" / "there"
    monkeypatch.setenv("NEMORUN_HOME", str(home))
    get_store().put(_record("a"))
    assert (home / STORE_FILENAME).is_file()
    assert get_store().get("local_persistent", "a") is not None


def test_threads_share_a_store_with_their_own_connections():
    store = get_store()
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for k in range(20):
                store.put(_record(f"t{t}-{k}"))
            store.update("local_persistent", f"t{t}-0", data={"thread": t})
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)
        finally:
            close_thread_connections()

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert len(store.list()) == 80
    assert all(store.get("local_persistent", f"t{t}-0").data == {"thread": t} for t in range(4))


def test_columns_follow_record_field_order():
    """Rows are turned into records positionally: the two orders must agree."""
    import dataclasses

    from nemo_run.core.store.records import JobRecord
    from nemo_run.core.store.sqlite import _COLUMNS

    assert tuple(f.name for f in dataclasses.fields(JobRecord)) == _COLUMNS


def test_list_without_data_skips_it(nemorun_home):
    from nemo_run.core.store import JobRecord, get_store

    get_store().put(JobRecord("local_persistent", "light", data={"pid": 1}))
    [record] = get_store().list(include_data=False)
    assert record.app_id == "light" and record.data == {}
