"""The hook, sync and async, against every fault the local server can inject."""

from __future__ import annotations

import asyncio

import pytest

from airflow_provider_polyai.exceptions import (
    PolyAIAPIError,
    PolyAIAuthenticationError,
    PolyAICallNotFoundError,
    PolyAICallOutcomeUnknownError,
    PolyAITransientError,
)
from tests.reliability.conftest import (
    SLOW_FAULT,
    TRANSIENT_STATUS_FAULTS,
    add_faults,
    fast_hook,
    log_lines,
    request_log,
)

NUMBER = "+14155550103"

PERMANENT_STATUS_FAULTS = [
    ("400", PolyAIAPIError),
    ("401", PolyAIAuthenticationError),
    ("404", PolyAICallNotFoundError),
]

# Trigger faults after which PolyAI may have queued the call, so the request must not be resent.
AMBIGUOUS_TRIGGER_FAULTS = ["502", "504", "502-html", "504-html", "reset", SLOW_FAULT, "truncated", "not-json"]

# Trigger faults after which PolyAI certainly queued nothing, so resending is safe.
NOT_QUEUED_TRIGGER_FAULTS = ["500", "503", "503-html", "429", "429:0.05"]


@pytest.fixture
def placed_call(fast_server, connect) -> tuple[object, str]:
    connect(fast_server)
    call_sid = fast_hook().trigger_call(NUMBER)
    return fast_server, call_sid


def _status_requests(server, call_sid: str) -> list[dict]:
    return [entry for entry in request_log(server) if entry["call_sid"] == call_sid and entry["method"] == "GET"]


async def _aget_status(call_sid: str, max_attempts: int):
    hook = fast_hook()
    try:
        return await hook.aget_call_status(call_sid, max_attempts=max_attempts)
    finally:
        await hook.aclose()


@pytest.mark.parametrize(("fault", "_code"), TRANSIENT_STATUS_FAULTS)
def test_sync_status_survives_fault_burst(placed_call, fault, _code):
    server, call_sid = placed_call
    add_faults(server, [fault] * 3, call_sid=call_sid)

    status = fast_hook(max_attempts=4).get_call_status(call_sid)

    assert status.call_sid == call_sid
    assert status.is_known
    assert len(_status_requests(server, call_sid)) == 4


@pytest.mark.parametrize(("fault", "_code"), TRANSIENT_STATUS_FAULTS)
def test_async_status_survives_fault_burst(placed_call, fault, _code):
    server, call_sid = placed_call
    add_faults(server, [fault] * 3, call_sid=call_sid)

    status = asyncio.run(_aget_status(call_sid, max_attempts=4))

    assert status.call_sid == call_sid
    assert status.is_known
    assert len(_status_requests(server, call_sid)) >= 4


@pytest.mark.parametrize(("fault", "code"), TRANSIENT_STATUS_FAULTS)
def test_sync_status_exhausts_attempts(placed_call, fault, code):
    server, call_sid = placed_call
    add_faults(server, [fault] * 3, call_sid=call_sid)

    with pytest.raises(PolyAITransientError) as caught:
        fast_hook(max_attempts=3).get_call_status(call_sid)

    assert caught.value.status_code == code
    assert call_sid in str(caught.value)
    assert "<html" not in str(caught.value)
    assert len(_status_requests(server, call_sid)) == 3


@pytest.mark.parametrize(("fault", "code"), TRANSIENT_STATUS_FAULTS)
def test_async_status_exhausts_attempts(placed_call, fault, code):
    server, call_sid = placed_call
    add_faults(server, [fault] * 4, call_sid=call_sid)

    with pytest.raises(PolyAITransientError) as caught:
        asyncio.run(_aget_status(call_sid, max_attempts=2))

    assert caught.value.status_code == code
    assert "<html" not in str(caught.value)
    # aiohttp itself resends an idempotent GET once when a reused connection drops (RFC 9112).
    requests_sent = len(_status_requests(server, call_sid))
    assert requests_sent >= 2
    assert requests_sent <= 4


@pytest.mark.parametrize(("fault", "error_class"), PERMANENT_STATUS_FAULTS)
def test_sync_status_fails_fast_on_permanent_error(placed_call, fault, error_class):
    server, call_sid = placed_call
    add_faults(server, [fault] * 3, call_sid=call_sid)

    with pytest.raises(error_class):
        fast_hook(max_attempts=4).get_call_status(call_sid)

    assert len(_status_requests(server, call_sid)) == 1


@pytest.mark.parametrize(("fault", "error_class"), PERMANENT_STATUS_FAULTS)
def test_async_status_fails_fast_on_permanent_error(placed_call, fault, error_class):
    server, call_sid = placed_call
    add_faults(server, [fault] * 3, call_sid=call_sid)

    with pytest.raises(error_class):
        asyncio.run(_aget_status(call_sid, max_attempts=4))

    assert len(_status_requests(server, call_sid)) == 1


def test_sync_status_fails_fast_on_revoked_token(placed_call):
    server, call_sid = placed_call
    hook = fast_hook()
    hook.get_call_status(call_sid)
    server.state.revoked_tokens.add(server.token)

    with pytest.raises(PolyAIAuthenticationError) as caught:
        hook.get_call_status(call_sid)

    assert "polyai_default" in str(caught.value)
    assert len(_status_requests(server, call_sid)) == 2


def test_sync_status_honours_retry_after(placed_call, capfd):
    server, call_sid = placed_call
    add_faults(server, ["429:0.3"], call_sid=call_sid)
    hook = fast_hook()
    hook.retry_max_wait = 1.0
    capfd.readouterr()

    hook.get_call_status(call_sid)

    retries = [line for line in log_lines(capfd) if "retrying in" in line]
    assert len(retries) == 1
    assert "retrying in 0.3 s" in retries[0]


def test_sync_status_caps_retry_after_at_max_wait(placed_call, capfd):
    server, call_sid = placed_call
    # Without the cap this test would sleep for the full 100 s the server requests.
    add_faults(server, ["429:100"], call_sid=call_sid)
    hook = fast_hook()
    hook.retry_max_wait = 0.2
    capfd.readouterr()

    hook.get_call_status(call_sid)

    retries = [line for line in log_lines(capfd) if "retrying in" in line]
    assert "retrying in 0.2 s" in retries[0]


@pytest.mark.parametrize("fault", NOT_QUEUED_TRIGGER_FAULTS)
def test_trigger_call_resends_when_not_queued(fast_server, connect, fault):
    connect(fast_server)
    add_faults(fast_server, [fault] * 2, endpoint="trigger")

    call_sid = fast_hook(max_attempts=3).trigger_call(NUMBER)

    placed = [call for call in fast_server.state.calls.values() if call.to_number == NUMBER]
    assert [call.call_sid for call in placed] == [call_sid]
    assert len(request_log(fast_server)) == 3


@pytest.mark.parametrize("fault", AMBIGUOUS_TRIGGER_FAULTS)
def test_trigger_call_never_resends_when_outcome_unknown(fast_server, connect, fault):
    connect(fast_server)
    add_faults(fast_server, [fault], endpoint="trigger")

    with pytest.raises(PolyAICallOutcomeUnknownError) as caught:
        fast_hook(max_attempts=5).trigger_call(NUMBER)

    assert "not sent again" in str(caught.value)
    assert len(request_log(fast_server)) == 1


def test_trigger_call_exhausts_attempts(fast_server, connect):
    connect(fast_server)
    add_faults(fast_server, ["503"] * 3, endpoint="trigger")

    with pytest.raises(PolyAITransientError) as caught:
        fast_hook(max_attempts=3).trigger_call(NUMBER)

    assert caught.value.status_code == 503
    assert fast_server.state.calls == {}
