"""Bad call SIDs, numbers, call options and connections fail before any request is sent.

Every case checks the local server's request log afterwards: it must be empty.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta

import pytest

from airflow_provider_polyai.exceptions import AirflowFailException, PolyAIInvalidInputError
from airflow_provider_polyai.hooks.polyai import PolyAIHook
from tests.reliability.conftest import CANARY_TOKEN, fast_hook, request_log, sync_dag_to_db

UUID = "550e8400-e29b-41d4-a716-446655440000"

BAD_CALL_SIDS = [
    pytest.param("", id="empty"),
    pytest.param(None, id="none"),
    pytest.param("None", id="none-string"),
    pytest.param(f" OUT-{UUID}", id="leading-space"),
    pytest.param(f"OUT-{UUID}\n", id="trailing-newline"),
    pytest.param(f"out-{UUID}", id="lower-case-prefix"),
    pytest.param(f"Out-{UUID}", id="mixed-case-prefix"),
    pytest.param(f"IN-{UUID}", id="wrong-prefix"),
    pytest.param(UUID, id="no-prefix"),
    pytest.param("OUT-", id="prefix-only"),
    pytest.param("OUT-abc/def", id="slash"),
    pytest.param("OUT-../../outbound/trigger", id="dot-dot"),
    pytest.param("OUT-..", id="dot-dot-only"),
    pytest.param("OUT-abc?x=1", id="query"),
    pytest.param("OUT-abc#frag", id="fragment"),
    pytest.param("OUT-abc%2F..", id="percent"),
    pytest.param("OUT-abc def", id="inner-space"),
    pytest.param("OUT-" + "a" * 129, id="too-long"),
    pytest.param([f"OUT-{UUID}"], id="list"),
    pytest.param((f"OUT-{UUID}", f"OUT-{UUID}"), id="tuple"),
    pytest.param(12345, id="int"),
]

BAD_NUMBERS = [
    pytest.param("4155552671", None, id="national-without-country"),
    pytest.param("+1415555267", None, id="too-short"),
    pytest.param("+99912345678", None, id="unknown-country-code"),
    pytest.param("call me", None, id="words"),
    pytest.param("", None, id="empty"),
    pytest.param(None, None, id="none"),
    pytest.param("020 7183 875", "GB", id="invalid-national"),
    pytest.param("+14155552671", "XX", id="unknown-region"),
]

BAD_METADATA = [
    pytest.param("[1, 2]", id="json-array-string"),
    pytest.param([1, 2], id="list"),
    pytest.param("not json", id="not-json"),
    pytest.param({1: "x"}, id="int-key"),
    pytest.param({"x": float("nan")}, id="nan"),
    pytest.param({"x": object()}, id="not-serializable"),
    pytest.param({"blob": "x" * 19_500}, id="over-26kb-base64"),
]


@pytest.fixture
def server(fast_server, connect):
    connect(fast_server)
    return fast_server


@pytest.mark.parametrize("call_sid", BAD_CALL_SIDS)
def test_status_rejects_bad_sid_before_sending(server, call_sid):
    with pytest.raises(PolyAIInvalidInputError):
        fast_hook().get_call_status(call_sid)

    assert request_log(server) == []


@pytest.mark.parametrize("call_sid", BAD_CALL_SIDS)
def test_async_status_rejects_bad_sid_before_sending(server, call_sid):
    async def read() -> None:
        hook = fast_hook()
        try:
            await hook.aget_call_status(call_sid)
        finally:
            await hook.aclose()

    with pytest.raises(PolyAIInvalidInputError):
        asyncio.run(read())

    assert request_log(server) == []


def test_invalid_input_error_fails_task_without_retry():
    assert issubclass(PolyAIInvalidInputError, AirflowFailException)


@pytest.mark.parametrize(("number", "country_code"), BAD_NUMBERS)
def test_trigger_rejects_bad_number_before_sending(server, number, country_code):
    with pytest.raises(PolyAIInvalidInputError):
        fast_hook().trigger_call(number, country_code=country_code)

    assert request_log(server) == []


def test_trigger_accepts_national_number_with_country_code(server):
    fast_hook().trigger_call("020 7183 8750", country_code="GB")

    placed = list(server.state.calls.values())
    assert [call.to_number for call in placed] == ["+442071838750"]


@pytest.mark.parametrize("metadata", BAD_METADATA)
def test_trigger_rejects_bad_metadata_before_sending(server, metadata):
    with pytest.raises(PolyAIInvalidInputError):
        fast_hook().trigger_call("+14155552671", metadata=metadata)

    assert request_log(server) == []


def test_trigger_accepts_metadata_just_under_limit(server):
    # 19,000 characters encode to about 25,360 base64 bytes, under PolyAI's 26 KB.
    fast_hook().trigger_call("+14155552671", metadata={"blob": "x" * 19_000})

    assert len(server.state.calls) == 1


@pytest.mark.parametrize("encryption", ["AES", "tls/srtp", "TLS", "none"])
def test_trigger_rejects_unknown_encryption_before_sending(server, encryption):
    with pytest.raises(PolyAIInvalidInputError):
        fast_hook().trigger_call("+14155552671", encryption=encryption)

    assert request_log(server) == []


def _hook_for(monkeypatch, **connection) -> PolyAIHook:
    monkeypatch.setenv("AIRFLOW_CONN_POLYAI_CHECKED", json.dumps({"conn_type": "polyai", **connection}))
    return fast_hook("polyai_checked")


def test_missing_connection_names_conn_id(server, name_lookups):
    from airflow.exceptions import AirflowNotFoundException

    with pytest.raises(AirflowNotFoundException) as caught:
        fast_hook("polyai_does_not_exist").get_call_status(f"OUT-{UUID}")

    assert "polyai_does_not_exist" in str(caught.value)
    assert request_log(server) == []


def test_connection_without_token_rejected(server, monkeypatch):
    hook = _hook_for(monkeypatch, host=server.base_url, password="")

    with pytest.raises(PolyAIInvalidInputError) as caught:
        hook.get_call_status(f"OUT-{UUID}")

    assert "no connector token" in str(caught.value)
    assert request_log(server) == []


@pytest.mark.parametrize("token", ["one\ntwo", "one two", "tok\x00en", "tök"])
def test_connection_token_unsendable_in_header_rejected(server, monkeypatch, token):
    hook = _hook_for(monkeypatch, host=server.base_url, password=token)

    with pytest.raises(PolyAIInvalidInputError) as caught:
        hook.get_call_status(f"OUT-{UUID}")

    assert token not in str(caught.value)
    assert request_log(server) == []


def test_base_url_without_scheme_rejected(server, monkeypatch):
    hook = _hook_for(monkeypatch, host=f"127.0.0.1:{server.port}", password=server.token)

    with pytest.raises(PolyAIInvalidInputError) as caught:
        hook.get_call_status(f"OUT-{UUID}")

    assert "has no scheme" in str(caught.value)
    assert request_log(server) == []


@pytest.mark.parametrize("suffix", ["/api", "/outbound/", "/?x=1", "/#top", "//"])
def test_base_url_with_path_rejected(server, monkeypatch, suffix):
    hook = _hook_for(monkeypatch, host=server.base_url + suffix, password=server.token)

    with pytest.raises(PolyAIInvalidInputError):
        hook.get_call_status(f"OUT-{UUID}")

    assert request_log(server) == []


def test_base_url_trailing_slash_normalised(server, monkeypatch):
    hook = _hook_for(monkeypatch, host=server.base_url + "/", password=server.token)
    call_sid = hook.trigger_call("+14155552671")

    hook.get_call_status(call_sid)

    assert hook.get_settings().base_url == server.base_url
    paths = [entry["path"] for entry in request_log(server)]
    assert paths == ["/outbound/trigger", f"/outbound/status/{call_sid}"]


def test_hook_refuses_plain_http_remote(monkeypatch, name_lookups):
    hook = _hook_for(monkeypatch, host="http://example.invalid", password=CANARY_TOKEN)

    with pytest.raises(PolyAIInvalidInputError) as caught:
        hook.get_call_status(f"OUT-{UUID}")

    assert "plain HTTP" in str(caught.value)
    assert name_lookups == []


def test_async_hook_refuses_plain_http_remote(monkeypatch, name_lookups):
    hook = _hook_for(monkeypatch, host="http://example.invalid", password=CANARY_TOKEN)

    async def read() -> None:
        try:
            await hook.aget_call_status(f"OUT-{UUID}")
        finally:
            await hook.aclose()

    with pytest.raises(PolyAIInvalidInputError):
        asyncio.run(read())

    assert name_lookups == []


def test_plain_http_allowed_only_when_chosen(monkeypatch, name_lookups):
    hook = _hook_for(
        monkeypatch, host="http://example.invalid", password=CANARY_TOKEN, extra={"allow_insecure_http": "true"}
    )

    settings = hook.get_settings()

    assert settings.base_url == "http://example.invalid"
    assert name_lookups == []


def test_tls_verification_on_by_default(monkeypatch):
    hook = _hook_for(monkeypatch, host="https://api.uk-1.platform.polyai.app", password=CANARY_TOKEN)

    assert hook.get_conn().verify is True


def test_tls_verification_off_only_when_chosen(monkeypatch):
    hook = _hook_for(
        monkeypatch, host="https://api.uk-1.platform.polyai.app", password=CANARY_TOKEN, extra={"verify_ssl": "false"}
    )

    assert hook.get_conn().verify is False


@pytest.mark.parametrize("value", ["maybe", "2", "nope"])
def test_tls_verification_unclear_value_rejected(monkeypatch, value):
    hook = _hook_for(
        monkeypatch, host="https://api.uk-1.platform.polyai.app", password=CANARY_TOKEN, extra={"verify_ssl": value}
    )

    with pytest.raises(PolyAIInvalidInputError):
        hook.get_settings()


def test_bad_input_fails_tasks_without_retry(airflow_db, server, monkeypatch, name_lookups):
    from airflow.sdk import DAG
    from airflow.utils.state import DagRunState, TaskInstanceState

    from airflow_provider_polyai.operators.outbound_call import TriggerOutboundCallOperator
    from airflow_provider_polyai.sensors.outbound_call import OutboundCallStatusSensor

    monkeypatch.setenv(
        "AIRFLOW_CONN_POLYAI_INSECURE",
        json.dumps({"conn_type": "polyai", "host": "http://example.invalid", "password": CANARY_TOKEN}),
    )
    retry = {"retries": 2, "retry_delay": timedelta(seconds=0)}
    with DAG("polyai_reliability_bad_input", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
        OutboundCallStatusSensor(task_id="sid_none_string", call_sid="None", mode="poke", **retry)
        OutboundCallStatusSensor(task_id="sid_lower_case", call_sid=f"out-{UUID}", deferrable=True, **retry)
        OutboundCallStatusSensor(task_id="sid_path", call_sid="OUT-../../outbound/trigger", mode="poke", **retry)
        TriggerOutboundCallOperator(task_id="number_invalid", to_number="+1415555267", **retry)
        TriggerOutboundCallOperator(
            task_id="metadata_too_large", to_number="+14155552671", metadata={"blob": "x" * 19_500}, **retry
        )
        TriggerOutboundCallOperator(task_id="encryption_unknown", to_number="+14155552671", encryption="AES", **retry)
        TriggerOutboundCallOperator(
            task_id="insecure_connection", to_number="+14155552671", polyai_conn_id="polyai_insecure", **retry
        )
    sync_dag_to_db(dag)

    run = dag.test()

    assert run.state == DagRunState.FAILED
    for ti in run.get_task_instances():
        assert ti.state == TaskInstanceState.FAILED, ti.task_id
        assert ti.try_number == 1, ti.task_id
    assert request_log(server) == []
    assert "example.invalid" not in name_lookups
