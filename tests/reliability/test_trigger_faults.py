"""OutboundCallStatusTrigger, run directly in an event loop, against faults of the local server.

A transient fault must never end a wait: only a permanent error or the deadline does.
"""

from __future__ import annotations

import asyncio
import time
import types

import pytest

from airflow_provider_polyai.triggers import outbound_call as trigger_module
from airflow_provider_polyai.triggers.outbound_call import OutboundCallStatusTrigger
from tests.reliability.conftest import (
    TRANSIENT_STATUS_FAULTS,
    add_faults,
    admin,
    fast_hook,
    log_lines,
    request_log,
    run_trigger,
)

BUSY_NUMBER = "+14155550105"  # queued, ringing, then busy: 0.2 s at 20x
LONG_NUMBER = "+14155550103"  # completed after 30 s in progress: 1.7 s at 20x

# Guards a test against a wait that never ends; a passing run takes a few seconds at most.
HANG_GUARD_SECONDS = 60


def _trigger(call_sid: str, *, deadline_in: float = 30.0, poke_interval: float = 0.02) -> OutboundCallStatusTrigger:
    return OutboundCallStatusTrigger(
        call_sid=call_sid,
        poke_interval=poke_interval,
        in_progress_poke_interval=0.05,
        deadline=time.time() + deadline_in,
    )


def _status_answers(server, call_sid: str) -> list[int | None]:
    """Return the HTTP status of each status request for ``call_sid``; ``None`` for a fault."""
    return [
        entry.get("status")
        for entry in request_log(server)
        if entry["call_sid"] == call_sid and entry["method"] == "GET"
    ]


@pytest.fixture
def busy_call(fast_server, connect) -> tuple[object, str]:
    connect(fast_server)
    return fast_server, fast_hook().trigger_call(BUSY_NUMBER)


@pytest.fixture
def long_call(fast_server, connect) -> tuple[object, str]:
    connect(fast_server)
    return fast_server, fast_hook().trigger_call(LONG_NUMBER)


@pytest.mark.parametrize(("fault", "_code"), TRANSIENT_STATUS_FAULTS)
def test_trigger_survives_fault_burst(busy_call, capfd, fault, _code):
    server, call_sid = busy_call
    add_faults(server, [fault] * 4, call_sid=call_sid)
    capfd.readouterr()

    events = run_trigger(_trigger(call_sid))

    assert [event.payload["event"] for event in events] == ["terminal"]
    assert events[0].payload["status"] == "busy"
    assert events[0].payload["reason"] == "destination busy"
    failures = [line for line in log_lines(capfd) if "status poll failed" in line]
    # aiohttp resends a GET once when the connection drops, so each failed poll uses two resets.
    expected_failures = 2 if fault == "reset" else 4
    assert len(failures) == expected_failures
    assert f"({expected_failures} in a row)" in failures[-1]


def test_trigger_warns_once_on_unknown_status(busy_call, capfd):
    server, call_sid = busy_call
    add_faults(server, ["status:on-hold"] * 3, call_sid=call_sid)
    capfd.readouterr()

    events = run_trigger(_trigger(call_sid))

    assert [event.payload["event"] for event in events] == ["terminal"]
    assert events[0].payload["status"] == "busy"
    warnings = [line for line in log_lines(capfd) if "does not list" in line]
    assert len(warnings) == 1
    assert "'on-hold'" in warnings[0]


def test_trigger_times_out_under_endless_faults(busy_call):
    server, call_sid = busy_call
    admin(server, "random-faults", {"probability": 1.0, "kinds": ["503-html", "reset"], "seed": 1})

    events = run_trigger(_trigger(call_sid, deadline_in=1.0))

    assert [event.payload["event"] for event in events] == ["timeout"]
    assert events[0].payload["call_sid"] == call_sid
    assert len(_status_answers(server, call_sid)) >= 2


def test_trigger_deadline_beats_long_retry_after(busy_call):
    server, call_sid = busy_call
    # The server requests a day; the trigger may wait at most until its own deadline.
    add_faults(server, ["429:86400"], call_sid=call_sid)

    async def run_guarded() -> list:
        trigger = _trigger(call_sid, deadline_in=1.0)
        return await asyncio.wait_for(_collect(trigger), HANG_GUARD_SECONDS)

    events = asyncio.run(run_guarded())

    assert [event.payload["event"] for event in events] == ["timeout"]


async def _collect(trigger: OutboundCallStatusTrigger) -> list:
    return [event async for event in trigger.run()]


def test_trigger_honours_retry_after(busy_call, capfd):
    server, call_sid = busy_call
    add_faults(server, ["429:0.3"], call_sid=call_sid)
    capfd.readouterr()

    run_trigger(_trigger(call_sid))

    failures = [line for line in log_lines(capfd) if "status poll failed" in line]
    assert len(failures) == 1
    assert "next poll in 0.3 s" in failures[0]


@pytest.fixture
def recorded_sleeps(monkeypatch) -> list[float]:
    """Record the trigger's sleeps and skip them, so minutes of backoff run in milliseconds."""
    sleeps: list[float] = []
    real_sleep = asyncio.sleep

    async def record(delay: float, *args, **kwargs) -> None:
        sleeps.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(trigger_module, "asyncio", types.SimpleNamespace(sleep=record))
    return sleeps


def test_trigger_backoff_grows_and_is_capped(busy_call, recorded_sleeps):
    server, call_sid = busy_call
    add_faults(server, ["500"] * 12, call_sid=call_sid)

    events = run_trigger(_trigger(call_sid, deadline_in=3600, poke_interval=5.0))

    assert [event.payload["event"] for event in events] == ["terminal"]
    error_waits = recorded_sleeps[:12]
    assert error_waits[0] <= 5.0
    assert error_waits[0] >= 2.5
    assert max(error_waits) <= trigger_module.MAX_ERROR_BACKOFF_SECONDS
    assert error_waits[-1] >= trigger_module.MAX_ERROR_BACKOFF_SECONDS / 2


def test_trigger_caps_retry_after(busy_call, recorded_sleeps):
    server, call_sid = busy_call
    add_faults(server, ["429:86400"], call_sid=call_sid)

    run_trigger(_trigger(call_sid, deadline_in=3600))

    assert recorded_sleeps[0] <= 300.0
    assert recorded_sleeps[0] >= 299.0


def test_trigger_fails_fast_on_token_revoked_mid_wait(long_call):
    server, call_sid = long_call

    async def revoke_after_first_answer() -> None:
        while 200 not in _status_answers(server, call_sid):
            await asyncio.sleep(0.01)
        await asyncio.to_thread(admin, server, "revoke-token", {"token": server.token})

    async def scenario() -> list:
        revoker = asyncio.create_task(revoke_after_first_answer())
        events = await asyncio.wait_for(_collect(_trigger(call_sid)), HANG_GUARD_SECONDS)
        await revoker
        return events

    events = asyncio.run(scenario())

    assert [event.payload["event"] for event in events] == ["error"]
    assert "rejected the connector token of connection 'polyai_default'" in events[0].payload["message"]
    answers = _status_answers(server, call_sid)
    assert answers[0] == 200
    assert answers.count(401) == 1


def test_trigger_explains_404_for_call_seen_before(long_call):
    server, call_sid = long_call

    async def forget_after_first_answer() -> None:
        while 200 not in _status_answers(server, call_sid):
            await asyncio.sleep(0.01)
        await asyncio.to_thread(admin, server, "forget-call", {"call_sid": call_sid})

    async def scenario() -> list:
        forgetter = asyncio.create_task(forget_after_first_answer())
        events = await asyncio.wait_for(_collect(_trigger(call_sid)), HANG_GUARD_SECONDS)
        await forgetter
        return events

    events = asyncio.run(scenario())

    assert [event.payload["event"] for event in events] == ["error"]
    message = events[0].payload["message"]
    assert "was found before" in message
    assert "has expired" in message
    assert "different connector token" in message
    answers = _status_answers(server, call_sid)
    assert answers[0] == 200
    assert answers.count(404) == 1


def test_trigger_reports_unknown_sid_without_history(fast_server, connect):
    connect(fast_server)
    call_sid = "OUT-00000000-0000-4000-8000-000000000000"

    events = run_trigger(_trigger(call_sid))

    assert [event.payload["event"] for event in events] == ["error"]
    assert "has no record of call" in events[0].payload["message"]
    assert "was found before" not in events[0].payload["message"]
