"""Cheap imports, the shared async session under load, and ending or starting a wait on the triggerer."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import requests

from airflow_provider_polyai.exceptions import PolyAIInvalidInputError
from airflow_provider_polyai.models import CallStatus
from airflow_provider_polyai.sensors.outbound_call import OutboundCallStatusSensor
from airflow_provider_polyai.triggers.outbound_call import OutboundCallStatusTrigger
from airflow_provider_polyai.version_compat import AIRFLOW_V_3_3_PLUS
from tests.compat import dag_serializer

SID = "OUT-550e8400-e29b-41d4-a716-446655440000"
QUICK = {"queued_seconds": 0.1, "ringing_seconds": 0.1, "in_progress_seconds": 0.2}


def _place_calls(server, number: str, count: int, scenario: dict) -> list[str]:
    requests.post(f"{server.base_url}/_local/scenarios", json={number: scenario}, timeout=10).raise_for_status()
    sids = []
    for _ in range(count):
        response = requests.post(
            f"{server.base_url}/outbound/trigger",
            json={"to_number": number},
            headers={"X-PolyAi-Auth-Token": server.token},
            timeout=10,
        )
        response.raise_for_status()
        sids.append(response.json()["call_sid"])
    return sids


async def _first_event(trigger, timeout: float = 60.0):
    async def first():
        async for event in trigger.run():
            return event
        return None

    return await asyncio.wait_for(first(), timeout)


# -- imports for DAG parsing ---------------------------------------------------------------------

PARSE_TIME_MODULES = [
    "airflow_provider_polyai.sensors.outbound_call",
    "airflow_provider_polyai.sensors.outbound_calls_batch",
    "airflow_provider_polyai.operators.outbound_call",
    "airflow_provider_polyai.triggers.outbound_call",
    "airflow_provider_polyai.triggers.outbound_calls_batch",
]


def test_parse_time_imports_leave_http_clients_unloaded():
    # One fresh interpreter for all modules: importing Airflow takes seconds. Some Airflow versions
    # load these themselves when airflow.sdk is imported (3.1.1 does), so what counts is what the
    # provider's modules add to what Airflow already loaded.
    heavy = ("aiohttp", "requests", "phonenumbers")
    code = (
        "import json, sys\n"
        "import airflow.sdk\n"
        f"before = {{name: name in sys.modules for name in {heavy!r}}}\n"
        + "".join(f"import {module}\n" for module in PARSE_TIME_MODULES)
        + f"after = {{name: name in sys.modules for name in {heavy!r}}}\n"
        "print(json.dumps({'before': before, 'after': after}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(done.stdout.strip().splitlines()[-1])

    checkable = [name for name in heavy if not loaded["before"][name]]
    if not checkable:
        pytest.skip("this Airflow version loads aiohttp, requests and phonenumbers with airflow.sdk")
    assert {name: loaded["after"][name] for name in checkable} == dict.fromkeys(checkable, False)
    # Airflow 3.3 itself loads none of them, so there every one is checked.
    if AIRFLOW_V_3_3_PLUS:
        assert checkable == list(heavy)


# -- shared async session ------------------------------------------------------------------------


async def test_hooks_share_one_bounded_session(polyai_connection):
    from airflow_provider_polyai.hooks import polyai as hook_module

    sids = _place_calls(polyai_connection, "+14155550200", 3, {"queued_seconds": 600})
    hooks = [hook_module.PolyAIHook() for _ in range(200)]
    try:
        await asyncio.gather(*(hook.aget_call_status(sids[i % 3], max_attempts=1) for i, hook in enumerate(hooks)))
        shared = dict(hook_module._SESSIONS[asyncio.get_running_loop()])
        leases = [lease.leases for lease in shared.values()]
        limits = [lease.session.connector.limit for lease in shared.values()]
        sessions = {id(hook._async_session) for hook in hooks}
    finally:
        for hook in hooks:
            await hook.aclose()

    assert leases == [200]
    assert limits == [hook_module.ASYNC_POOL_SIZE]
    assert len(sessions) == 1


async def test_hook_reuses_session_across_polls(polyai_connection):
    from airflow_provider_polyai.hooks.polyai import _SESSIONS, PolyAIHook

    (call_sid,) = _place_calls(polyai_connection, "+14155550201", 1, {"queued_seconds": 600})
    hook = PolyAIHook()
    try:
        await hook.aget_call_status(call_sid, max_attempts=1)
        first_session = hook._async_session
        for _ in range(5):
            await hook.aget_call_status(call_sid, max_attempts=1)
        session_after = hook._async_session
        leases = next(iter(_SESSIONS[asyncio.get_running_loop()].values())).leases
    finally:
        await hook.aclose()

    assert session_after is first_session
    assert leases == 1


async def test_last_lease_closes_shared_session(polyai_connection):
    from airflow_provider_polyai.hooks.polyai import _SESSIONS, PolyAIHook

    (call_sid,) = _place_calls(polyai_connection, "+14155550202", 1, {"queued_seconds": 600})
    hooks = [PolyAIHook() for _ in range(3)]
    for hook in hooks:
        await hook.aget_call_status(call_sid, max_attempts=1)
    session = hooks[0]._async_session

    for hook in hooks:
        await hook.aclose()

    assert session.closed
    assert _SESSIONS.get(asyncio.get_running_loop(), {}) == {}


async def test_single_attempt_read_skips_retrier(polyai_connection, monkeypatch):
    from airflow_provider_polyai.hooks import polyai as hook_module

    (call_sid,) = _place_calls(polyai_connection, "+14155550203", 1, {"queued_seconds": 600})

    def no_retrier(**kwargs):
        raise AssertionError("a single-attempt read must not build a retrier")

    monkeypatch.setattr(hook_module, "AsyncRetrying", no_retrier)
    hook = hook_module.PolyAIHook()
    try:
        status = await hook.aget_call_status(call_sid, max_attempts=1)
    finally:
        await hook.aclose()

    assert status.status == "queued"


# -- ending the task from the triggerer ----------------------------------------------------------


def test_trigger_serialization_unchanged_without_end_from_trigger():
    _, kwargs = OutboundCallStatusTrigger(call_sid=SID).serialize()

    assert "end_from_trigger" not in kwargs
    assert "failure_statuses" not in kwargs


def test_trigger_serializes_end_from_trigger_round_trip():
    trigger = OutboundCallStatusTrigger(call_sid=SID, end_from_trigger=True, failure_statuses=("busy", "failed"))
    classpath, kwargs = trigger.serialize()

    assert kwargs["failure_statuses"] == ["busy", "failed"]
    assert OutboundCallStatusTrigger(**kwargs).serialize() == (classpath, kwargs)


@pytest.mark.polyai_time_scale(10)
async def test_trigger_ends_task_with_xcoms(polyai_connection):
    from airflow.triggers.base import TaskSuccessEvent

    (call_sid,) = _place_calls(polyai_connection, "+14155550210", 1, QUICK)
    trigger = OutboundCallStatusTrigger(call_sid=call_sid, poke_interval=0.05, end_from_trigger=True)
    # A triggerer sets the task instance before running a trigger; dag.test() does not.
    trigger.task_instance = SimpleNamespace(task_id="wait")

    event = await _first_event(trigger)

    assert isinstance(event, TaskSuccessEvent)
    assert event.xcoms["return_value"] == CallStatus(call_sid, "completed", "call ended normally").to_xcom()
    assert event.xcoms["status"] == "completed"
    assert event.xcoms["reason"] == "call ended normally"


@pytest.mark.polyai_time_scale(10)
async def test_trigger_resumes_worker_on_failure_status(polyai_connection):
    (call_sid,) = _place_calls(polyai_connection, "+14155550215", 1, {**QUICK, "status": "busy"})
    trigger = OutboundCallStatusTrigger(
        call_sid=call_sid, poke_interval=0.05, end_from_trigger=True, failure_statuses=["busy"]
    )
    trigger.task_instance = SimpleNamespace(task_id="wait")

    event = await _first_event(trigger)

    assert event.payload["event"] == "terminal"
    assert event.payload["status"] == "busy"


@pytest.mark.polyai_time_scale(10)
async def test_trigger_outside_triggerer_fires_plain_event(polyai_connection):
    (call_sid,) = _place_calls(polyai_connection, "+14155550216", 1, QUICK)
    trigger = OutboundCallStatusTrigger(call_sid=call_sid, poke_interval=0.05, end_from_trigger=True)

    event = await _first_event(trigger)

    assert event.payload["event"] == "terminal"


def test_sensor_defers_with_end_from_trigger(polyai_connection):
    from tests.compat import TaskDeferred

    (call_sid,) = _place_calls(polyai_connection, "+14155550220", 1, {"queued_seconds": 600})
    sensor = OutboundCallStatusSensor(task_id="wait", call_sid=call_sid, failure_statuses=["busy"], timeout=60)

    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({"ti": SimpleNamespace(xcom_push=lambda **kwargs: None)})

    trigger = deferred.value.trigger
    assert trigger.end_from_trigger is True
    assert trigger.failure_statuses == ["busy"]


def test_sensor_end_from_trigger_can_be_switched_off(polyai_connection):
    from tests.compat import TaskDeferred

    (call_sid,) = _place_calls(polyai_connection, "+14155550221", 1, {"queued_seconds": 600})
    sensor = OutboundCallStatusSensor(task_id="wait", call_sid=call_sid, end_from_trigger=False, timeout=60)

    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({"ti": SimpleNamespace(xcom_push=lambda **kwargs: None)})

    assert deferred.value.trigger.end_from_trigger is False


# -- starting on the triggerer -------------------------------------------------------------------


def test_sensor_start_from_trigger_sets_trigger_args():
    sensor = OutboundCallStatusSensor(
        task_id="wait",
        call_sid="{{ params.call_sid }}",
        start_from_trigger=True,
        timeout=120,
        failure_statuses=["failed"],
    )
    args = sensor.start_trigger_args

    assert sensor.start_from_trigger is True
    assert args.trigger_cls == "airflow_provider_polyai.triggers.outbound_call.OutboundCallStatusTrigger"
    assert args.next_method == "execute_complete"
    assert args.trigger_kwargs["call_sid"] == "{{ params.call_sid }}"
    assert args.trigger_kwargs["failure_statuses"] == ["failed"]
    assert args.timeout.total_seconds() == 120


def test_sensor_start_from_trigger_builds_trigger_from_args():
    sensor = OutboundCallStatusSensor(task_id="wait", call_sid=SID, start_from_trigger=True, timeout=60)

    trigger = OutboundCallStatusTrigger(**sensor.start_trigger_args.trigger_kwargs)

    assert trigger.call_sid == SID
    assert trigger.end_from_trigger is True


def test_sensor_start_from_trigger_rejects_upstream_output():
    from airflow.sdk import DAG
    from airflow.sdk.bases.operator import BaseOperator

    with DAG(dag_id="start_from_trigger_xcom", schedule=None):
        upstream = BaseOperator(task_id="place")
        with pytest.raises(PolyAIInvalidInputError, match="needs call_sid as a string"):
            OutboundCallStatusSensor(task_id="wait", call_sid=upstream.output, start_from_trigger=True)


def test_sensor_start_from_trigger_survives_serialization():
    from airflow.sdk import DAG

    with DAG(dag_id="start_from_trigger_serialized", schedule=None) as dag:
        OutboundCallStatusSensor(task_id="wait", call_sid=SID, start_from_trigger=True, timeout=90)

    from airflow.serialization.enums import Encoding

    serializer = dag_serializer()
    task = serializer.from_dict(serializer.to_dict(dag)).get_task("wait")
    # The scheduler keeps trigger_kwargs in Airflow's encoded form, as the triggerer reads them.
    kwargs = task.start_trigger_args.trigger_kwargs
    kwargs = kwargs.get(Encoding.VAR, kwargs)

    assert task.start_from_trigger is True
    assert kwargs["call_sid"] == SID
