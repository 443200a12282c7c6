"""Job records never hold secrets: the store masks them before writing anything."""

from __future__ import annotations

import pytest

from nemo_run.core.redact import MASK
from nemo_run.core.store import STORE_FILENAME, JobRecord, get_store, mask_secrets

SECRET_VALUE = "sv-9f1c2e-do-not-store"

SECRET_DATA = [
    pytest.param({"client_secret": SECRET_VALUE}, id="client_secret"),
    pytest.param({"token": SECRET_VALUE}, id="token"),
    pytest.param({"HF_TOKEN": SECRET_VALUE}, id="env-style-upper-case"),
    pytest.param({"auth": {"api_key": SECRET_VALUE}}, id="nested-api_key"),
    pytest.param({"a": {"b": {"apikey": SECRET_VALUE}}}, id="deeply-nested-apikey"),
    pytest.param(
        {"roles": [{"name": "trainer", "env": {"WANDB_API_KEY": SECRET_VALUE}}]},
        id="mapping-inside-list",
    ),
    pytest.param({"cmd": ["python", "train.py", "--api-key", SECRET_VALUE]}, id="flag-then-value"),
    pytest.param(
        {"cmd": ["python", "train.py", f"--token={SECRET_VALUE}"]}, id="flag-equals-value"
    ),
    pytest.param({"cmd": ["env", f"HF_TOKEN={SECRET_VALUE}", "python"]}, id="assignment-arg"),
    pytest.param(
        {"envs": [{"name": "NGC_API_KEY", "value": SECRET_VALUE}]}, id="name-value-env-list"
    ),
    pytest.param({"run": f"set -e\npython t.py --password {SECRET_VALUE}\n"}, id="script-text"),
]


@pytest.mark.parametrize("data", SECRET_DATA)
def test_put_and_update_mask_secrets(data, nemorun_home):
    store = get_store()
    store.put(JobRecord("local_persistent", "leaky", data=data))
    store.put(JobRecord("local_persistent", "other"))
    store.update("local_persistent", "other", data=data)

    for app_id in ("leaky", "other"):
        stored = store.get("local_persistent", app_id).data
        assert SECRET_VALUE not in repr(stored)
        assert MASK in repr(stored)
    for path in nemorun_home.glob(STORE_FILENAME + "*"):
        assert SECRET_VALUE.encode() not in path.read_bytes(), path


def test_partial_payload_kwargs_are_masked_and_still_decode(nemorun_home):
    import nemo_run as run
    from nemo_run.core.runners.partial import decode, encode

    payload = encode(run.Partial(dict, lr=0.5, api_key=SECRET_VALUE))
    store = get_store()
    store.put(
        JobRecord(
            "local_persistent",
            "p",
            data={"roles": [{"args": ["-m", "nemo_run.core.runners.partial", payload]}]},
        )
    )
    stored = store.get("local_persistent", "p").data["roles"][0]["args"][2]
    assert stored != payload
    rebuilt = decode(stored)
    assert rebuilt.api_key == MASK and rebuilt.lr == 0.5
    for path in nemorun_home.glob(STORE_FILENAME + "*"):
        assert payload.encode() not in path.read_bytes()


@pytest.mark.parametrize(
    "data",
    [
        {"token": ""},
        {"api_key": None},
        {"client_secret": []},
        {"credentials": {}},
        {"auth": {"password": "", "user": "me"}},
        {"roles": [{"env": {"HF_TOKEN": ""}}]},
        {"cmd": ["python", "t.py", "--max-tokens", "512", "--tokenizer", "/m/tok.model"]},
        {"note": "rotate the token and password", "path": "/secrets/dir"},
    ],
)
def test_values_that_are_not_secrets_are_kept(data):
    store = get_store()
    store.put(JobRecord("local_persistent", "a", data=data))
    assert store.get("local_persistent", "a").data == data
    store.update("local_persistent", "a", data=data)
    assert store.get("local_persistent", "a").data == data


def test_mask_secrets_leaves_the_input_alone():
    data = {"outer": {"api_key": "x"}}
    assert mask_secrets(data) == {"outer": {"api_key": MASK}}
    assert data == {"outer": {"api_key": "x"}}
