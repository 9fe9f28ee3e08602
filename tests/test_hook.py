"""PolyAIHook against the local PolyAI server: statuses, request bodies, errors, retries, timeouts."""

from __future__ import annotations

import json
import socket

import pytest
import requests

from airflow_provider_polyai.exceptions import (
    PolyAIAPIError,
    PolyAIAuthenticationError,
    PolyAICallNotFoundError,
    PolyAICallOutcomeUnknownError,
    PolyAITransientError,
)
from airflow_provider_polyai.hooks.polyai import PolyAIHook
from airflow_provider_polyai.models import TERMINAL_STATUSES
from airflow_provider_polyai.testing.server import LocalPolyAIServer

UNKNOWN_SID = "OUT-00000000-1111-2222-3333-444444444444"
NUMBER = "+14155550120"

# One scripted scenario per documented status. A phase of 600 s keeps the call in it for the test.
HOLD = 600.0
STATUS_SCENARIOS = {
    "queued": {"queued_seconds": HOLD},
    "ringing": {"queued_seconds": 0, "ringing_seconds": HOLD},
    "in-progress": {"queued_seconds": 0, "ringing_seconds": 0, "in_progress_seconds": HOLD},
    **{
        status: {
            "status": status,
            "reason": f"scripted {status}",
            "queued_seconds": 0,
            "ringing_seconds": 0,
            "in_progress_seconds": 0,
        }
        for status in sorted(TERMINAL_STATUSES)
    },
}
STATUS_NUMBERS = {status: f"+1415555013{index}" for index, status in enumerate(STATUS_SCENARIOS)}


def _admin(server: LocalPolyAIServer, action: str, payload: dict | None = None) -> None:
    response = requests.post(f"{server.base_url}/_local/{action}", json=payload or {}, timeout=5)
    response.raise_for_status()


def _request_log(server: LocalPolyAIServer, method: str | None = None) -> list[dict]:
    entries = requests.get(f"{server.base_url}/_local/requests", timeout=5).json()
    return [entry for entry in entries if method is None or entry["method"] == method]


def _calls(server: LocalPolyAIServer) -> list[dict]:
    return requests.get(f"{server.base_url}/_local/calls", timeout=5).json()


def _set_connection(monkeypatch, server, *, token: str | None = None, **extra) -> None:
    conn = json.loads(server.connection_json(token))
    if extra:
        conn["extra"] = extra
    monkeypatch.setenv("AIRFLOW_CONN_POLYAI_DEFAULT", json.dumps(conn))


def _hook(**kwargs) -> PolyAIHook:
    options = {"retry_min_wait": 0.01, "retry_max_wait": 0.05, **kwargs}
    return PolyAIHook(**options)


def _place_in_status(server: LocalPolyAIServer, status: str) -> str:
    number = STATUS_NUMBERS[status]
    _admin(server, "scenarios", {number: STATUS_SCENARIOS[status]})
    return _hook().trigger_call(number)


def _fault(server: LocalPolyAIServer, endpoint: str, *faults: str) -> None:
    _admin(server, "faults", {"endpoint": endpoint, "faults": list(faults)})


# -- statuses -----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", list(STATUS_SCENARIOS))
def test_hook_reads_status(polyai_connection, status):
    call_sid = _place_in_status(polyai_connection, status)

    result = _hook().get_call_status(call_sid)

    assert result.call_sid == call_sid
    assert result.status == status
    assert result.is_terminal is (status in TERMINAL_STATUSES)
    assert result.is_known is True


@pytest.mark.parametrize("status", ["queued", "in-progress", "busy"])
def test_hook_terminal_reason_is_empty_before_end(polyai_connection, status):
    call_sid = _place_in_status(polyai_connection, status)

    reason = _hook().get_call_status(call_sid).reason

    assert reason == ("scripted busy" if status == "busy" else "")


@pytest.mark.parametrize("status", list(STATUS_SCENARIOS))
async def test_hook_async_reads_status(polyai_connection, status):
    call_sid = _place_in_status(polyai_connection, status)
    hook = _hook()
    try:
        result = await hook.aget_call_status(call_sid)
    finally:
        await hook.aclose()

    assert result.call_sid == call_sid
    assert result.status == status
    assert result.is_terminal is (status in TERMINAL_STATUSES)


async def test_hook_async_reuses_hook_for_several_reads(polyai_connection):
    call_sid = _place_in_status(polyai_connection, "ringing")
    hook = _hook()
    try:
        first = await hook.aget_call_status(call_sid)
        second = await hook.aget_call_status(call_sid)
    finally:
        await hook.aclose()

    assert first == second
    assert len(_request_log(polyai_connection, "GET")) == 2


# -- trigger request body -----------------------------------------------------------------------


def test_trigger_call_sends_e164_number(polyai_connection):
    _hook().trigger_call("020 7183 8750", country_code="gb")

    [call] = _calls(polyai_connection)
    assert call["to_number"] == "+442071838750"
    assert call["country_code"] == "GB"


def test_trigger_call_sends_encryption_and_metadata(polyai_connection):
    metadata = {"campaign": "reminder", "attempt": 2, "tags": ["a", "b"]}

    call_sid = _hook().trigger_call(NUMBER, encryption="UDP/RTP", metadata=json.dumps(metadata))

    [call] = _calls(polyai_connection)
    assert call["call_sid"] == call_sid
    assert call["encryption"] == "UDP/RTP"
    assert call["metadata"] == metadata


def test_trigger_call_leaves_out_unset_options(polyai_connection):
    _hook().trigger_call(NUMBER)

    [call] = _calls(polyai_connection)
    assert call["country_code"] == "ZZ"
    assert call["encryption"] == "TLS/SRTP"
    assert call["metadata"] is None


def test_trigger_call_returns_server_sid(polyai_connection):
    call_sid = _hook().trigger_call(NUMBER)

    [entry] = _request_log(polyai_connection, "POST")
    assert entry["call_sid"] == call_sid
    assert entry["status"] == 200


def test_trigger_call_invalid_number_sends_nothing(polyai_connection):
    with pytest.raises(ValueError):
        _hook().trigger_call("12345")

    assert _request_log(polyai_connection) == []


# -- client errors ------------------------------------------------------------------------------


def test_hook_wrong_token_raises_naming_connection(polyai_server, monkeypatch):
    _set_connection(monkeypatch, polyai_server, token="not-the-token")

    with pytest.raises(PolyAIAuthenticationError) as excinfo:
        _hook().get_call_status(UNKNOWN_SID)

    assert excinfo.value.status_code == 401
    assert "'polyai_default'" in str(excinfo.value)
    assert "not-the-token" not in str(excinfo.value)
    assert len(_request_log(polyai_server)) == 1


def test_trigger_call_wrong_token_places_nothing(polyai_server, monkeypatch):
    _set_connection(monkeypatch, polyai_server, token="not-the-token")

    with pytest.raises(PolyAIAuthenticationError):
        _hook().trigger_call(NUMBER)

    assert _calls(polyai_server) == []
    assert len(_request_log(polyai_server)) == 1


async def test_hook_async_wrong_token_raises(polyai_server, monkeypatch):
    _set_connection(monkeypatch, polyai_server, token="not-the-token")
    hook = _hook()
    try:
        with pytest.raises(PolyAIAuthenticationError):
            await hook.aget_call_status(UNKNOWN_SID)
    finally:
        await hook.aclose()

    assert len(_request_log(polyai_server)) == 1


def test_hook_malformed_sid_raises_400(polyai_connection):
    # The client accepts any "OUT-" SID of safe characters; the server wants a UUID after the prefix.
    with pytest.raises(PolyAIAPIError) as excinfo:
        _hook().get_call_status("OUT-not-a-uuid")

    assert excinfo.value.status_code == 400
    assert excinfo.value.code == "INVALID_CALL_SID"
    assert len(_request_log(polyai_connection)) == 1


def test_trigger_call_400_is_not_retried(polyai_connection):
    _fault(polyai_connection, "trigger", "400")

    with pytest.raises(PolyAIAPIError) as excinfo:
        _hook().trigger_call(NUMBER)

    assert excinfo.value.status_code == 400
    assert "as invalid" in str(excinfo.value)
    assert len(_request_log(polyai_connection, "POST")) == 1


def test_hook_unknown_sid_raises_not_found(polyai_connection):
    with pytest.raises(PolyAICallNotFoundError) as excinfo:
        _hook().get_call_status(UNKNOWN_SID)

    assert excinfo.value.status_code == 404
    assert UNKNOWN_SID in str(excinfo.value)
    assert len(_request_log(polyai_connection)) == 1


async def test_hook_async_unknown_sid_raises_not_found(polyai_connection):
    hook = _hook()
    try:
        with pytest.raises(PolyAICallNotFoundError):
            await hook.aget_call_status(UNKNOWN_SID)
    finally:
        await hook.aclose()


# -- server errors and retries ------------------------------------------------------------------


def test_hook_retries_429_without_retry_after(polyai_connection):
    call_sid = _place_in_status(polyai_connection, "ringing")
    _fault(polyai_connection, "status", "429")

    assert _hook().get_call_status(call_sid).status == "ringing"
    assert len(_request_log(polyai_connection, "GET")) == 2


def test_hook_waits_retry_after_on_429(polyai_connection):
    call_sid = _place_in_status(polyai_connection, "ringing")
    _fault(polyai_connection, "status", "429:1")

    status = _hook(retry_max_wait=5.0).get_call_status(call_sid)

    first, second = _request_log(polyai_connection, "GET")
    assert status.status == "ringing"
    assert first["fault"] == "429:1"
    # A lower bound only: the hook must not poll again before the second the server asked for.
    assert second["time"] - first["time"] >= 0.9


@pytest.mark.parametrize("code", ["500", "502", "503", "504", "502-html"])
def test_hook_retries_server_error_then_succeeds(polyai_connection, code):
    call_sid = _place_in_status(polyai_connection, "ringing")
    _fault(polyai_connection, "status", code, code)

    assert _hook(max_attempts=3).get_call_status(call_sid).status == "ringing"
    assert len(_request_log(polyai_connection, "GET")) == 3


@pytest.mark.parametrize("code", ["500", "502", "503", "504"])
def test_hook_gives_up_after_max_attempts(polyai_connection, code, capsys):
    call_sid = _place_in_status(polyai_connection, "ringing")
    _fault(polyai_connection, "status", *[code] * 5)

    with pytest.raises(PolyAITransientError) as excinfo:
        _hook(max_attempts=3).get_call_status(call_sid)

    assert excinfo.value.status_code == int(code)
    assert len(_request_log(polyai_connection, "GET")) == 3
    # Airflow's structlog setup writes task and hook logs to stdout, not to the logging module.
    assert "(attempt 2 of 3), retrying in" in capsys.readouterr().out


async def test_hook_async_retries_server_error(polyai_connection):
    call_sid = _place_in_status(polyai_connection, "in-progress")
    _fault(polyai_connection, "status", "503", "500")
    hook = _hook(max_attempts=3)
    try:
        status = await hook.aget_call_status(call_sid)
    finally:
        await hook.aclose()

    assert status.status == "in-progress"
    assert len(_request_log(polyai_connection, "GET")) == 3


async def test_hook_async_single_attempt_raises_at_once(polyai_connection):
    call_sid = _place_in_status(polyai_connection, "queued")
    _fault(polyai_connection, "status", "503")
    hook = _hook(max_attempts=5)
    try:
        with pytest.raises(PolyAITransientError):
            await hook.aget_call_status(call_sid, max_attempts=1)
    finally:
        await hook.aclose()

    assert len(_request_log(polyai_connection, "GET")) == 1


# -- trigger retries: never ring a person twice -------------------------------------------------


@pytest.mark.parametrize("fault", ["502", "504", "502-html", "reset"])
def test_trigger_call_outcome_unknown_is_not_retried(polyai_connection, fault):
    _fault(polyai_connection, "trigger", fault)

    with pytest.raises(PolyAICallOutcomeUnknownError) as excinfo:
        _hook(max_attempts=5).trigger_call(NUMBER)

    assert "not sent again" in str(excinfo.value)
    assert len(_request_log(polyai_connection, "POST")) == 1


def test_trigger_call_read_timeout_is_not_retried(polyai_server, monkeypatch):
    _set_connection(monkeypatch, polyai_server, timeout=0.3)
    _fault(polyai_server, "trigger", "slow:1.5")

    with pytest.raises(PolyAICallOutcomeUnknownError):
        _hook(max_attempts=5).trigger_call(NUMBER)

    # The server placed the call but responded after the client timed out: one person is rung once.
    assert len(_calls(polyai_server)) == 1
    assert len(_request_log(polyai_server, "POST")) == 1


@pytest.mark.parametrize("fault", ["500", "503", "429", "429:0"])
def test_trigger_call_retries_when_not_queued(polyai_connection, fault):
    _fault(polyai_connection, "trigger", fault)

    call_sid = _hook(max_attempts=3).trigger_call(NUMBER)

    [call] = _calls(polyai_connection)
    assert call["call_sid"] == call_sid
    assert len(_request_log(polyai_connection, "POST")) == 2


def test_trigger_call_gives_up_after_max_attempts(polyai_connection):
    _fault(polyai_connection, "trigger", "500", "500", "500")

    with pytest.raises(PolyAITransientError):
        _hook(max_attempts=3).trigger_call(NUMBER)

    assert _calls(polyai_connection) == []
    assert len(_request_log(polyai_connection, "POST")) == 3


class _HookStartingServerOnRetry(PolyAIHook):
    """Starts the server after the first refused connection, as a service coming back up would."""

    def __init__(self, server: LocalPolyAIServer, **kwargs) -> None:
        super().__init__(**kwargs)
        self.server = server
        self.refused_attempts = 0

    def _log_retry(self, retry_state) -> None:
        super()._log_retry(retry_state)
        self.refused_attempts += 1
        if self.refused_attempts == 1:
            self.server.start()


def test_trigger_call_retries_refused_connection(monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = LocalPolyAIServer(port=port)
    _set_connection(monkeypatch, server)
    hook = _HookStartingServerOnRetry(server, max_attempts=5, retry_min_wait=0.01, retry_max_wait=0.05)
    try:
        call_sid = hook.trigger_call(NUMBER)
        calls = _calls(server)
    finally:
        server.stop()

    assert hook.refused_attempts == 1
    assert [call["call_sid"] for call in calls] == [call_sid]


def test_trigger_call_refused_every_time_raises_transient(monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    conn = {"conn_type": "polyai", "host": f"http://127.0.0.1:{port}", "password": "t"}
    monkeypatch.setenv("AIRFLOW_CONN_POLYAI_DEFAULT", json.dumps(conn))

    with pytest.raises(PolyAITransientError) as excinfo:
        _hook(max_attempts=2).trigger_call(NUMBER)

    assert excinfo.value.request_sent is False


def test_trigger_call_invalid_port_sends_nothing(monkeypatch):
    # Caught when the settings are read: at request time it would look like a possibly placed call.
    conn = {"conn_type": "polyai", "host": "http://127.0.0.1:99999", "password": "t"}
    monkeypatch.setenv("AIRFLOW_CONN_POLYAI_DEFAULT", json.dumps(conn))

    with pytest.raises(ValueError) as excinfo:
        _hook().trigger_call(NUMBER)

    assert "invalid port" in str(excinfo.value)


# -- timeouts -----------------------------------------------------------------------------------


def test_hook_honours_request_timeout(polyai_server, monkeypatch):
    _set_connection(monkeypatch, polyai_server, timeout=0.3)
    call_sid = _place_in_status(polyai_server, "ringing")
    _fault(polyai_server, "status", "slow:1")

    with pytest.raises(PolyAITransientError) as excinfo:
        _hook(max_attempts=1).get_call_status(call_sid)

    assert "ReadTimeout" in str(excinfo.value)


async def test_hook_async_honours_request_timeout(polyai_server, monkeypatch):
    _set_connection(monkeypatch, polyai_server, timeout=0.3)
    call_sid = _place_in_status(polyai_server, "ringing")
    _fault(polyai_server, "status", "slow:1")
    hook = _hook(max_attempts=1)
    try:
        with pytest.raises(PolyAITransientError) as excinfo:
            await hook.aget_call_status(call_sid)
    finally:
        await hook.aclose()

    assert "Timeout" in str(excinfo.value)


def test_hook_slow_answer_within_timeout_succeeds(polyai_server, monkeypatch):
    _set_connection(monkeypatch, polyai_server, timeout=3)
    call_sid = _place_in_status(polyai_server, "ringing")
    _fault(polyai_server, "status", "slow:0.3")

    assert _hook(max_attempts=1).get_call_status(call_sid).status == "ringing"


# -- test_connection ----------------------------------------------------------------------------


def test_test_connection_accepts_good_token(polyai_connection):
    ok, message = _hook().test_connection()

    assert ok is True
    assert polyai_connection.base_url in message


def test_test_connection_rejects_bad_token(polyai_server, monkeypatch):
    _set_connection(monkeypatch, polyai_server, token="not-the-token")

    ok, message = _hook().test_connection()

    assert ok is False
    assert "rejected" in message
    assert "not-the-token" not in message


def test_test_connection_reports_bad_host(monkeypatch):
    conn = {"conn_type": "polyai", "host": "api.example.com", "password": "t"}
    monkeypatch.setenv("AIRFLOW_CONN_POLYAI_DEFAULT", json.dumps(conn))

    ok, message = _hook().test_connection()

    assert ok is False
    assert "has no scheme" in message
