"""OutboundCallStatusSensor in every mode, against the local server and, for runs, dag.test()."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta

import pytest
import requests

from airflow.sdk import DAG

from airflow_provider_polyai.exceptions import PolyAIError, PolyAIInvalidInputError
from airflow_provider_polyai.hooks.polyai import PolyAIHook
from airflow_provider_polyai.operators.outbound_call import TriggerOutboundCallOperator
from airflow_provider_polyai.sensors.outbound_call import OutboundCallStatusSensor
from airflow_provider_polyai.triggers.outbound_call import OutboundCallStatusTrigger
from airflow_provider_polyai.waiting import DEFERRAL_TIMEOUT_GRACE_SECONDS
from tests.compat import AirflowFailException, AirflowSensorTimeout, TaskDeferred, dag_test_reschedule_bug
from tests.conftest import sync_dag_to_db

SID = "OUT-550e8400-e29b-41d4-a716-446655440000"
COMPLETED_NUMBER = "+14155550150"
BUSY_NUMBER = "+14155550155"


class _RecordingTaskInstance:
    """Test double for the task instance in direct ``execute`` calls. It records XCom pushes."""

    def __init__(self) -> None:
        self.xcoms: dict[str, object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.xcoms[key] = value


def _context() -> dict:
    return {"ti": _RecordingTaskInstance()}


def _sensor(call_sid: str = SID, **kwargs) -> OutboundCallStatusSensor:
    options = {"task_id": "wait", "poke_interval": 0.1, "in_progress_poke_interval": 0.2, **kwargs}
    return OutboundCallStatusSensor(call_sid=call_sid, **options)


def _place_call(server, number: str, **scenario) -> str:
    if scenario:
        requests.post(f"{server.base_url}/_local/scenarios", json={number: scenario}, timeout=5).raise_for_status()
    response = requests.post(
        f"{server.base_url}/outbound/trigger",
        json={"to_number": number},
        headers={"X-PolyAi-Auth-Token": server.token},
        timeout=5,
    )
    response.raise_for_status()
    return response.json()["call_sid"]


def _status_reads(server) -> list[dict]:
    entries = requests.get(f"{server.base_url}/_local/requests", timeout=5).json()
    return [entry for entry in entries if entry["method"] == "GET"]


def _run_place_and_wait(request, number: str, **sensor_kwargs):
    """Run a DAG that places a call to ``number`` and waits for it. Return the run and the sensor's TI."""
    dag_id = re.sub(r"\W", "_", request.node.name)
    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
        place = TriggerOutboundCallOperator(task_id="place", to_number=number)
        options = {"poke_interval": 0.1, "in_progress_poke_interval": 0.2, **sensor_kwargs}
        OutboundCallStatusSensor(task_id="wait", call_sid=place.output, **options)
    sync_dag_to_db(dag)
    run = dag.test()
    return run, run.get_task_instance("wait")


# -- deferrable execute -------------------------------------------------------------------------


def test_sensor_defers_while_call_not_terminal(polyai_connection):
    call_sid = _place_call(polyai_connection, COMPLETED_NUMBER, queued_seconds=600)
    sensor = _sensor(call_sid, deferrable=True, timeout=120)

    before = time.time()
    with pytest.raises(TaskDeferred) as excinfo:
        sensor.execute(_context())
    after = time.time()

    deferred = excinfo.value
    trigger = deferred.trigger
    assert isinstance(trigger, OutboundCallStatusTrigger)
    assert trigger.call_sid == call_sid
    assert trigger.last_status == "queued"
    assert trigger.poke_interval == 0.1
    assert trigger.in_progress_poke_interval == 0.2
    assert before + 120 <= trigger.deadline <= after + 120
    assert deferred.method_name == "execute_complete"
    assert deferred.timeout == timedelta(seconds=120 + DEFERRAL_TIMEOUT_GRACE_SECONDS)


def test_sensor_defers_after_transient_first_read(polyai_connection):
    call_sid = _place_call(polyai_connection, COMPLETED_NUMBER, queued_seconds=600)
    requests.post(
        f"{polyai_connection.base_url}/_local/faults",
        json={"endpoint": "status", "faults": ["503"] * 10},
        timeout=5,
    ).raise_for_status()
    sensor = _sensor(call_sid, deferrable=True, timeout=60)
    # A hook with short retries, so the read gives up quickly as it would after the default backoff.
    sensor._hook = lambda: PolyAIHook(max_attempts=2, retry_min_wait=0.01, retry_max_wait=0.02)

    with pytest.raises(TaskDeferred) as excinfo:
        sensor.execute(_context())

    assert excinfo.value.trigger.last_status is None


def test_sensor_returns_at_once_when_already_terminal(polyai_connection):
    call_sid = _place_call(
        polyai_connection, BUSY_NUMBER, status="busy", reason="line busy", queued_seconds=0, ringing_seconds=0
    )
    context = _context()

    result = _sensor(call_sid, deferrable=True).execute(context)

    assert result["status"] == "busy"
    assert result["call_sid"] == call_sid
    assert context["ti"].xcoms["status"] == "busy"
    assert context["ti"].xcoms["reason"] == "line busy"
    assert len(_status_reads(polyai_connection)) == 1


def test_sensor_terminal_failure_status_fails_without_deferring(polyai_connection):
    call_sid = _place_call(polyai_connection, BUSY_NUMBER, status="busy", queued_seconds=0, ringing_seconds=0)
    context = _context()

    with pytest.raises(AirflowFailException) as excinfo:
        _sensor(call_sid, deferrable=True, failure_statuses=["busy"]).execute(context)

    assert "'busy'" in str(excinfo.value)
    assert context["ti"].xcoms["status"] == "busy"
    assert context["ti"].xcoms["return_value"]["status"] == "busy"


def test_sensor_unknown_sid_fails_without_deferring(polyai_connection):
    with pytest.raises(AirflowFailException) as excinfo:
        _sensor("OUT-00000000-1111-2222-3333-444444444444", deferrable=True).execute(_context())

    assert "HTTP 404" in str(excinfo.value)


def test_sensor_invalid_sid_sends_nothing(polyai_connection):
    with pytest.raises(PolyAIInvalidInputError):
        _sensor("None", deferrable=True).execute(_context())

    assert _status_reads(polyai_connection) == []


# -- execute_complete ---------------------------------------------------------------------------


def test_execute_complete_terminal_event_returns_outcome():
    context = _context()
    event = {"event": "terminal", "call_sid": SID, "status": "completed", "reason": "done", "message": ""}

    result = _sensor().execute_complete(context, event)

    assert result["call_sid"] == SID
    assert result["status"] == "completed"
    assert result["reason"] == "done"
    assert context["ti"].xcoms["status"] == "completed"
    assert context["ti"].xcoms["reason"] == "done"


def test_execute_complete_failure_status_fails_after_xcom():
    context = _context()
    event = {"event": "terminal", "call_sid": SID, "status": "no-answer", "reason": "nobody", "message": ""}

    with pytest.raises(AirflowFailException) as excinfo:
        _sensor(failure_statuses=("no-answer", "busy")).execute_complete(context, event)

    assert SID in str(excinfo.value)
    assert context["ti"].xcoms["status"] == "no-answer"
    assert context["ti"].xcoms["reason"] == "nobody"
    assert context["ti"].xcoms["return_value"]["status"] == "no-answer"


def test_execute_complete_timeout_event_raises_sensor_timeout():
    event = {"event": "timeout", "call_sid": SID, "status": "ringing", "reason": "", "message": "last 'ringing'"}

    with pytest.raises(AirflowSensorTimeout) as excinfo:
        _sensor().execute_complete(_context(), event)

    assert "last 'ringing'" in str(excinfo.value)


def test_execute_complete_error_event_fails_task():
    event = {"event": "error", "call_sid": SID, "status": None, "reason": "", "message": "token rejected"}

    with pytest.raises(AirflowFailException) as excinfo:
        _sensor().execute_complete(_context(), event)

    assert "token rejected" in str(excinfo.value)


def test_execute_complete_without_event_raises():
    with pytest.raises(PolyAIError):
        _sensor().execute_complete(_context(), None)


# -- construction -------------------------------------------------------------------------------


def test_sensor_rejects_non_terminal_failure_status():
    with pytest.raises(PolyAIInvalidInputError) as excinfo:
        _sensor(failure_statuses=["in-progress"])

    assert "in-progress" in str(excinfo.value)


def test_sensor_rejects_zero_interval():
    with pytest.raises(PolyAIInvalidInputError):
        _sensor(in_progress_poke_interval=0)


def test_sensor_call_sid_is_templated():
    assert "call_sid" in OutboundCallStatusSensor.template_fields


def test_sensor_deferrable_defaults_to_true(monkeypatch):
    monkeypatch.delenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", raising=False)

    assert _sensor().deferrable is True


@pytest.mark.parametrize(("value", "expected"), [("false", False), ("False", False), ("true", True)])
def test_sensor_deferrable_follows_environment(monkeypatch, value, expected):
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", value)

    assert _sensor().deferrable is expected


def test_sensor_explicit_deferrable_beats_environment(monkeypatch):
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "false")

    assert _sensor(deferrable=True).deferrable is True


# -- poke interval ------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "expected"), [("queued", 0.1), ("ringing", 0.1), ("in-progress", 0.2)])
def test_sensor_next_poke_interval_follows_status(status, expected):
    sensor = _sensor(timeout=60)
    sensor._last_status = status

    assert sensor._get_next_poke_interval(0.0, lambda: 1.0, 1) == expected


def test_sensor_next_poke_interval_stops_at_timeout():
    sensor = _sensor(in_progress_poke_interval=30, timeout=10)
    sensor._last_status = "in-progress"

    assert sensor._get_next_poke_interval(0.0, lambda: 8.0, 1) == 2.0


# -- runs through dag.test() --------------------------------------------------------------------

MODES = [
    pytest.param({"deferrable": True}, id="deferrable"),
    pytest.param({"deferrable": False, "mode": "poke"}, id="poke"),
    pytest.param({"deferrable": False, "mode": "reschedule"}, id="reschedule"),
]


@pytest.mark.polyai_time_scale(20)
@pytest.mark.parametrize("mode", MODES)
def test_sensor_run_succeeds_with_xcom(airflow_db, polyai_connection, request, mode):
    run, ti = _run_place_and_wait(request, COMPLETED_NUMBER, **mode)
    call_sid = ti.xcom_pull(task_ids="place")

    assert ti.state == "success"
    assert run.state == "success"
    assert ti.xcom_pull(task_ids="wait")["call_sid"] == call_sid
    assert ti.xcom_pull(task_ids="wait")["status"] == "completed"
    assert ti.xcom_pull(task_ids="wait", key="status") == "completed"
    assert ti.xcom_pull(task_ids="wait", key="reason") == "call ended normally"


@pytest.mark.polyai_time_scale(20)
@pytest.mark.parametrize("mode", MODES)
def test_sensor_run_failure_status_fails_with_xcom(airflow_db, polyai_connection, request, mode):
    run, ti = _run_place_and_wait(request, BUSY_NUMBER, failure_statuses=["busy"], retries=2, **mode)

    assert ti.state == "failed"
    assert run.state == "failed"
    # AirflowFailException skips the two retries: the call's outcome would not change.
    assert ti.try_number == 1
    assert ti.xcom_pull(task_ids="wait")["status"] == "busy"
    assert ti.xcom_pull(task_ids="wait", key="status") == "busy"
    assert ti.xcom_pull(task_ids="wait", key="reason") == "destination busy"


@pytest.mark.polyai_time_scale(4)
@dag_test_reschedule_bug
def test_sensor_reschedule_mode_frees_slot_between_pokes(airflow_db, polyai_connection, request):
    from sqlalchemy import func, select

    from airflow.models.taskreschedule import TaskReschedule
    from airflow.utils.session import create_session

    # At 4x the default call takes 4 s of wall time. dag.test() looks for due reschedules once a
    # second, so the sensor is rescheduled about three times.
    _, ti = _run_place_and_wait(request, COMPLETED_NUMBER, deferrable=False, mode="reschedule")
    with create_session() as session:
        reschedules = session.scalar(select(func.count()).where(TaskReschedule.ti_id == ti.id))

    assert ti.state == "success"
    assert reschedules >= 2


@pytest.mark.polyai_time_scale(20)
def test_sensor_poke_run_logs_each_transition(airflow_db, polyai_connection, request, capsys):
    _, ti = _run_place_and_wait(request, COMPLETED_NUMBER, deferrable=False, mode="poke")
    call_sid = ti.xcom_pull(task_ids="place")

    out = capsys.readouterr().out
    assert ti.state == "success"
    assert f"Call {call_sid}: None -> " in out
    assert f"Call {call_sid}: ended: completed" in out or f"Call {call_sid} ended: completed" in out


@pytest.mark.parametrize(
    "mode", [*MODES[:2], pytest.param(*MODES[2].values, id="reschedule", marks=dag_test_reschedule_bug)]
)
def test_sensor_run_times_out_without_retries(airflow_db, polyai_connection, request, mode):
    requests.post(
        f"{polyai_connection.base_url}/_local/scenarios",
        json={COMPLETED_NUMBER: {"queued_seconds": 0, "ringing_seconds": 600}},
        timeout=5,
    ).raise_for_status()

    # A zero retry delay keeps a wrongly retried timeout from stalling dag.test() for minutes.
    _, ti = _run_place_and_wait(
        request, COMPLETED_NUMBER, timeout=1, retries=2, retry_delay=timedelta(0), **mode
    )

    assert ti.state == "failed"
    # Airflow does not retry a sensor that timed out, in any mode.
    assert ti.try_number == 1
    assert ti.xcom_pull(task_ids="wait", key="status") is None


class _TaskListener:
    """A listener plugin stand-in; Airflow only needs an object with hook implementations."""

    from airflow.listeners import hookimpl

    @hookimpl
    def on_task_instance_running(self, previous_state, task_instance):
        pass


def test_sensor_ends_from_trigger_without_listeners(monkeypatch):
    from airflow.listeners.listener import get_listener_manager

    monkeypatch.setattr(type(get_listener_manager()), "has_listeners", property(lambda self: False))

    sensor = OutboundCallStatusSensor(task_id="wait", call_sid=SID)

    assert sensor.end_from_trigger is True


def test_sensor_resumes_on_worker_when_listeners_registered():
    from airflow.listeners.listener import get_listener_manager

    manager = get_listener_manager()
    listener = _TaskListener()
    manager.add_listener(listener)
    try:
        sensor = OutboundCallStatusSensor(task_id="wait", call_sid=SID)
    finally:
        manager.pm.unregister(listener)

    assert sensor.end_from_trigger is False
