"""Job records never hold secrets: the store refuses them before writing anything."""

from __future__ import annotations

import pytest

from nemo_run.core.store import STORE_FILENAME, JobRecord, get_store, refuse_secrets
from nemo_run.exceptions import StoreError

SECRET_VALUE = "sv-9f1c2e-do-not-store"

SECRET_DATA = [
    pytest.param({"client_secret": SECRET_VALUE}, id="client_secret"),
    pytest.param({"token": SECRET_VALUE}, id="token"),
    pytest.param({"HF_TOKEN": SECRET_VALUE}, id="env-style-upper-case"),
    pytest.param({"password": 1234}, id="non-string-value"),
    pytest.param({"auth": {"api_key": SECRET_VALUE}}, id="nested-api_key"),
    pytest.param({"a": {"b": {"apikey": SECRET_VALUE}}}, id="deeply-nested-apikey"),
    pytest.param({"credentials": {"user": "me"}}, id="non-empty-mapping"),
    pytest.param({"roles": [{"name": "trainer", "env": {"WANDB_API_KEY": SECRET_VALUE}}]},
                 id="mapping-inside-list"),
]


@pytest.mark.parametrize("data", SECRET_DATA)
def test_put_refuses_secrets_and_writes_nothing(data, nemorun_home):
    store = get_store()
    store.put(JobRecord("local_persistent", "existing"))

    with pytest.raises(StoreError) as excinfo:
        store.put(JobRecord("local_persistent", "leaky", data=data))
    assert SECRET_VALUE not in str(excinfo.value)  # the error names the key, not the value

    with pytest.raises(StoreError):  # one bad record spoils the whole batch
        store.put_many([JobRecord("local_persistent", "fine"),
                        JobRecord("docker_persistent", "leaky", data=data)])

    assert [r.app_id for r in store.list()] == ["existing"]
    for path in nemorun_home.glob(STORE_FILENAME + "*"):
        assert SECRET_VALUE.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("data", SECRET_DATA)
def test_update_refuses_secrets(data):
    store = get_store()
    store.put(JobRecord("local_persistent", "a", data={"keep": True}))
    with pytest.raises(StoreError):
        store.update("local_persistent", "a", data=data)
    assert store.get("local_persistent", "a").data == {"keep": True}


@pytest.mark.parametrize(
    "data",
    [
        {"token": ""},
        {"api_key": None},
        {"client_secret": []},
        {"credentials": {}},
        {"auth": {"password": "", "user": "me"}},
        {"roles": [{"env": {"HF_TOKEN": ""}}]},
    ],
)
def test_empty_secret_values_are_allowed(data):
    store = get_store()
    store.put(JobRecord("local_persistent", "a", data=data))
    assert store.get("local_persistent", "a").data == data
    store.update("local_persistent", "a", data=data)
    assert store.get("local_persistent", "a").data == data


def test_refuse_secrets_ignores_secret_words_in_values():
    refuse_secrets({"note": "rotate the token and password", "path": "/secrets/dir"})
    with pytest.raises(StoreError, match="api_key"):
        refuse_secrets({"outer": {"api_key": "x"}})
