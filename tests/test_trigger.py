"""OutboundCallStatusTrigger against the local PolyAI server: events, schedule, deadline, errors."""

from __future__ import annotations

import asyncio
import importlib
import itertools
import json
import statistics
import time

import pytest
import requests

from airflow_provider_polyai.triggers.outbound_call import OutboundCallStatusTrigger

UNKNOWN_SID = "OUT-00000000-1111-2222-3333-444444444444"
NUMBER = "+14155550140"


def _admin(server, action: str, payload: dict | None = None) -> None:
    requests.post(f"{server.base_url}/_local/{action}", json=payload or {}, timeout=5).raise_for_status()


def _status_reads(server, call_sid: str) -> list[dict]:
    entries = requests.get(f"{server.base_url}/_local/requests", params={"call_sid": call_sid}, timeout=5).json()
    return [entry for entry in entries if entry["method"] == "GET"]


def _place_call(server, **scenario) -> str:
    """Place a call on the server that follows ``scenario`` (seconds of server time per phase)."""
    if scenario:
        _admin(server, "scenarios", {NUMBER: scenario})
    response = requests.post(
        f"{server.base_url}/outbound/trigger",
        json={"to_number": NUMBER},
        headers={"X-PolyAi-Auth-Token": server.token},
        timeout=5,
    )
    response.raise_for_status()
    return response.json()["call_sid"]


def _trigger(call_sid: str, **kwargs) -> OutboundCallStatusTrigger:
    options = {"poke_interval": 0.05, "in_progress_poke_interval": 0.1, **kwargs}
    return OutboundCallStatusTrigger(call_sid=call_sid, **options)


async def _first_event(trigger: OutboundCallStatusTrigger) -> dict:
    """Run ``trigger`` until its first event, then close it as the triggerer does."""
    events = trigger.run()
    try:
        event = await asyncio.wait_for(events.__anext__(), timeout=60)
    finally:
        await events.aclose()
    return event.payload


# -- terminal events ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["completed", "failed", "no-answer", "busy", "cancelled"])
async def test_trigger_fires_terminal_event(polyai_connection, status):
    call_sid = _place_call(
        polyai_connection,
        status=status,
        reason=f"scripted {status}",
        queued_seconds=0.1,
        ringing_seconds=0.1,
        in_progress_seconds=0.1,
    )

    event = await _first_event(_trigger(call_sid))

    assert event["event"] == "terminal"
    assert event["call_sid"] == call_sid
    assert event["status"] == status
    assert event["reason"] == f"scripted {status}"


async def test_trigger_already_terminal_fires_at_first_poll(polyai_connection):
    call_sid = _place_call(polyai_connection, status="busy", queued_seconds=0, ringing_seconds=0)

    event = await _first_event(_trigger(call_sid, poke_interval=30, in_progress_poke_interval=60))

    assert event["status"] == "busy"
    assert len(_status_reads(polyai_connection, call_sid)) == 1


async def test_trigger_logs_each_transition(polyai_connection, capsys):
    call_sid = _place_call(polyai_connection, queued_seconds=0.2, ringing_seconds=0.2, in_progress_seconds=0.2)

    await _first_event(_trigger(call_sid))

    # Airflow's structlog setup writes trigger logs to stdout, not to the logging module.
    out = capsys.readouterr().out
    for transition in ("None -> queued", "queued -> ringing", "ringing -> in-progress", "in-progress -> completed"):
        assert f"{call_sid}: {transition}" in out


async def test_trigger_first_poll_waits_after_status_seen(polyai_connection):
    # The task read "in-progress" just before deferring, so the trigger waits one long interval first.
    call_sid = _place_call(polyai_connection, queued_seconds=0, ringing_seconds=0, in_progress_seconds=600)
    trigger = _trigger(call_sid, in_progress_poke_interval=5, deadline=time.time() + 0.5, last_status="in-progress")

    event = await _first_event(trigger)

    assert event["event"] == "timeout"
    assert _status_reads(polyai_connection, call_sid) == []


# -- schedule -----------------------------------------------------------------------------------


async def test_trigger_polls_slower_once_in_progress(polyai_connection):
    call_sid = _place_call(polyai_connection, queued_seconds=0.8, ringing_seconds=0.8, in_progress_seconds=3.5)

    event = await _first_event(_trigger(call_sid, poke_interval=0.2, in_progress_poke_interval=1.0))

    reads = _status_reads(polyai_connection, call_sid)
    gaps_after = {"pre-answer": [], "in-progress": []}
    for read, next_read in itertools.pairwise(reads):
        phase = "in-progress" if read["call_status"] == "in-progress" else "pre-answer"
        gaps_after[phase].append(next_read["time"] - read["time"])
    short_gap = statistics.median(gaps_after["pre-answer"])
    long_gap = statistics.median(gaps_after["in-progress"])

    assert event["status"] == "completed"
    assert len(gaps_after["pre-answer"]) >= 3
    assert len(gaps_after["in-progress"]) >= 2
    # Ratios, not wall-clock limits: a loaded machine stretches both gaps alike. Expected 0.2.
    assert short_gap / long_gap < 0.5
    # Lower bounds only: a poll may come late but never early.
    assert long_gap >= 0.9
    assert short_gap >= 0.15


# -- serialization ------------------------------------------------------------------------------


def test_trigger_serialize_names_importable_class():
    classpath, _ = _trigger(UNKNOWN_SID).serialize()

    assert classpath == "airflow_provider_polyai.triggers.outbound_call.OutboundCallStatusTrigger"


def test_trigger_serialize_keeps_arguments():
    trigger = _trigger(UNKNOWN_SID, polyai_conn_id="polyai_uk", deadline=1_900_000_000.5, last_status="ringing")

    _, kwargs = trigger.serialize()

    assert kwargs["call_sid"] == UNKNOWN_SID
    assert kwargs["polyai_conn_id"] == "polyai_uk"
    assert kwargs["poke_interval"] == 0.05
    assert kwargs["in_progress_poke_interval"] == 0.1
    assert kwargs["deadline"] == 1_900_000_000.5
    assert kwargs["last_status"] == "ringing"


def test_trigger_serialize_kwargs_survive_json():
    _, kwargs = _trigger(UNKNOWN_SID, deadline=1_900_000_000.5).serialize()

    assert json.loads(json.dumps(kwargs)) == kwargs


async def test_trigger_rebuilt_from_serialize_reaches_same_outcome(polyai_connection):
    call_sid = _place_call(
        polyai_connection, status="no-answer", reason="nobody", queued_seconds=0.1, ringing_seconds=0.2
    )
    original = _trigger(call_sid, deadline=time.time() + 60)
    classpath, kwargs = original.serialize()
    # The triggerer imports the class by the path serialize() gave and passes the stored kwargs.
    module_name, class_name = classpath.rsplit(".", 1)
    rebuilt = getattr(importlib.import_module(module_name), class_name)(**json.loads(json.dumps(kwargs)))
    rebuilt_serialized = rebuilt.serialize()

    original_event = await _first_event(original)
    rebuilt_event = await _first_event(rebuilt)

    assert rebuilt_serialized == (classpath, kwargs)
    assert rebuilt_event == original_event


# -- deadline -----------------------------------------------------------------------------------


async def test_trigger_past_deadline_times_out_at_once(polyai_connection):
    call_sid = _place_call(polyai_connection, queued_seconds=600)

    event = await _first_event(_trigger(call_sid, deadline=time.time() - 1))

    assert event["event"] == "timeout"
    assert event["call_sid"] == call_sid
    assert _status_reads(polyai_connection, call_sid) == []


async def test_trigger_deadline_in_progress_reports_last_status(polyai_connection):
    call_sid = _place_call(polyai_connection, queued_seconds=0, ringing_seconds=0, in_progress_seconds=600)

    event = await _first_event(_trigger(call_sid, deadline=time.time() + 0.6))

    assert event["event"] == "timeout"
    assert event["status"] == "in-progress"
    assert "'in-progress'" in event["message"]
    assert len(_status_reads(polyai_connection, call_sid)) >= 1


# -- permanent errors ---------------------------------------------------------------------------


async def test_trigger_wrong_token_fires_error(polyai_server, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_POLYAI_DEFAULT", polyai_server.connection_json("not-the-token"))

    event = await _first_event(_trigger(UNKNOWN_SID, deadline=time.time() + 30))

    assert event["event"] == "error"
    assert "'polyai_default'" in event["message"]
    assert "not-the-token" not in event["message"]
    assert len(_status_reads(polyai_server, UNKNOWN_SID)) == 1


async def test_trigger_unknown_sid_fires_error(polyai_connection):
    event = await _first_event(_trigger(UNKNOWN_SID, deadline=time.time() + 30))

    assert event["event"] == "error"
    assert "HTTP 404" in event["message"]
    assert "was found before" not in event["message"]


async def test_trigger_404_after_seen_explains_expiry(polyai_connection):
    call_sid = _place_call(polyai_connection, queued_seconds=600)
    trigger = _trigger(call_sid, poke_interval=0.1, deadline=time.time() + 30)
    task = asyncio.ensure_future(_first_event(trigger))
    for _ in range(600):  # waits for the trigger's first read; bounded in case it never polls
        if _status_reads(polyai_connection, call_sid):
            break
        await asyncio.sleep(0.05)
    _admin(polyai_connection, "forget-call", {"call_sid": call_sid})

    event = await task

    assert event["event"] == "error"
    assert "last status 'queued'" in event["message"]
    assert "expired" in event["message"]
    assert "different connector token" in event["message"]


async def test_trigger_malformed_sid_fires_error(polyai_connection):
    event = await _first_event(_trigger("OUT-not-a-uuid", deadline=time.time() + 30))

    assert event["event"] == "error"
    assert "HTTP 400" in event["message"]


async def test_trigger_missing_connection_raises(polyai_connection):
    # Raised rather than sent as an error event: Airflow then fails the trigger, and the task's
    # retries apply, because a secrets backend that is briefly down also reports "not defined".
    from tests.compat import AirflowNotFoundException

    with pytest.raises(AirflowNotFoundException) as excinfo:
        await _first_event(_trigger(UNKNOWN_SID, polyai_conn_id="polyai_missing", deadline=time.time() + 5))

    assert "polyai_missing" in str(excinfo.value)


async def test_trigger_invalid_connection_fires_error(polyai_connection, monkeypatch):
    conn = {"conn_type": "polyai", "host": "api.example.com", "password": "t"}
    monkeypatch.setenv("AIRFLOW_CONN_POLYAI_DEFAULT", json.dumps(conn))

    event = await _first_event(_trigger(UNKNOWN_SID, deadline=time.time() + 5))

    assert event["event"] == "error"
    assert "has no scheme" in event["message"]
