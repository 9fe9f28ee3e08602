"""The batch trigger and sensor against the local PolyAI server, and the mapped-and-batch example DAG."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from types import SimpleNamespace

import pytest
import requests

from airflow_provider_polyai.exceptions import AirflowFailException, PolyAIInvalidInputError
from airflow_provider_polyai.sensors.outbound_calls_batch import (
    XCOM_COUNTS_KEY,
    XCOM_OUTCOME_COUNTS_KEY,
    OutboundCallsBatchSensor,
    validate_call_sids,
)
from airflow_provider_polyai.triggers.outbound_calls_batch import (
    OutboundCallsBatchTrigger,
    count_outcomes,
    count_statuses,
    failed_call_sids,
)
from tests.compat import dagbag_module
from tests.conftest import EXAMPLE_DAGS, sync_dag_to_db

UNKNOWN_SID = "OUT-550e8400-e29b-41d4-a716-446655440000"


def _place_calls(server, scenarios: dict[str, dict]) -> dict[str, str]:
    """Script each number's scenario, place one call to it, and return number -> call SID."""
    requests.post(f"{server.base_url}/_local/scenarios", json=scenarios, timeout=10).raise_for_status()
    sids = {}
    for number in scenarios:
        response = requests.post(
            f"{server.base_url}/outbound/trigger",
            json={"to_number": number},
            headers={"X-PolyAi-Auth-Token": server.token},
            timeout=10,
        )
        response.raise_for_status()
        sids[number] = response.json()["call_sid"]
    return sids


def _status_polls(server, call_sid: str) -> int:
    log = requests.get(f"{server.base_url}/_local/requests", params={"call_sid": call_sid}, timeout=10).json()
    return sum(1 for entry in log if entry["method"] == "GET")


async def _first_event(trigger, timeout: float = 60.0):
    async def first():
        async for event in trigger.run():
            return event
        return None

    return await asyncio.wait_for(first(), timeout)


QUICK = {"queued_seconds": 0.1, "ringing_seconds": 0.1, "in_progress_seconds": 0.2}


# -- SID validation ------------------------------------------------------------------------------


def test_validate_call_sids_rejects_string():
    with pytest.raises(PolyAIInvalidInputError, match="must be a list of call SIDs"):
        validate_call_sids(UNKNOWN_SID)


def test_validate_call_sids_names_bad_position():
    with pytest.raises(PolyAIInvalidInputError, match=r"call_sids\[1\]"):
        validate_call_sids([UNKNOWN_SID, "out-lowercase"])


def test_validate_call_sids_rejects_none_from_upstream():
    with pytest.raises(PolyAIInvalidInputError, match="pushed no SID"):
        validate_call_sids([None])


def test_validate_call_sids_drops_duplicates_in_order():
    other = "OUT-11111111-2222-3333-4444-555555555555"
    assert validate_call_sids([other, UNKNOWN_SID, other]) == [other, UNKNOWN_SID]


def test_count_statuses_counts_each_status():
    outcomes = {"a": {"status": "busy"}, "b": {"status": "completed"}, "c": {"status": "busy"}}
    assert count_statuses(outcomes) == {"busy": 2, "completed": 1}


def test_count_outcomes_counts_each_outcome():
    outcomes = {
        "a": {"status": "FAILURE", "outcome": "failed"},
        "b": {"status": "SUCCESS", "outcome": "completed"},
        "c": {"status": "FAILURE", "outcome": "failed"},
    }
    assert count_outcomes(outcomes) == {"completed": 1, "failed": 2}


@pytest.mark.parametrize("failure_statuses", [("failed",), ("FAILURE",)])
def test_failed_call_sids_matches_raw_status_or_outcome(failure_statuses):
    outcomes = {"b": {"status": "FAILURE", "outcome": "failed"}, "a": {"status": "SUCCESS", "outcome": "completed"}}
    assert failed_call_sids(outcomes, failure_statuses) == ["b"]


def test_failed_call_sids_reads_entry_without_outcome():
    outcomes = {"a": {"status": "busy"}}
    assert failed_call_sids(outcomes, ["busy"]) == ["a"]


# -- trigger -------------------------------------------------------------------------------------


def test_batch_trigger_serializes_round_trip():
    trigger = OutboundCallsBatchTrigger(
        call_sids=[UNKNOWN_SID], poke_interval=2, deadline=123.0, max_concurrency=4, failure_statuses={"busy"}
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_polyai.triggers.outbound_calls_batch.OutboundCallsBatchTrigger"
    assert OutboundCallsBatchTrigger(**kwargs).serialize() == (classpath, kwargs)


@pytest.mark.polyai_time_scale(10)
async def test_batch_trigger_reports_every_outcome(polyai_connection):
    sids = _place_calls(
        polyai_connection,
        {
            "+14155550110": {**QUICK},
            "+14155550115": {**QUICK, "status": "busy", "reason": "line busy"},
            "+14155550114": {**QUICK, "status": "no-answer", "reason": "nobody"},
        },
    )
    trigger = OutboundCallsBatchTrigger(
        call_sids=list(sids.values()), poke_interval=0.05, in_progress_poke_interval=0.05
    )

    event = await _first_event(trigger)

    assert event.payload["event"] == "terminal"
    assert event.payload["outcomes"][sids["+14155550115"]] == {
        "status": "busy",
        "reason": "line busy",
        "outcome": "busy",
    }
    assert event.payload["counts"] == {"busy": 1, "completed": 1, "no-answer": 1}
    assert event.payload["outcome_counts"] == {"busy": 1, "completed": 1, "no-answer": 1}
    assert event.payload["pending"] == {}
    assert event.payload["generation"] == "outbound"


async def test_batch_trigger_polls_each_call_on_its_schedule(polyai_connection):
    sids = _place_calls(
        polyai_connection,
        {
            "+14155550120": {"queued_seconds": 0, "ringing_seconds": 600},
            "+14155550121": {"queued_seconds": 0, "ringing_seconds": 0, "in_progress_seconds": 600},
        },
    )
    ringing, in_progress = sids["+14155550120"], sids["+14155550121"]
    trigger = OutboundCallsBatchTrigger(
        call_sids=[ringing, in_progress], poke_interval=0.1, in_progress_poke_interval=300
    )

    with pytest.raises(asyncio.TimeoutError):
        await _first_event(trigger, timeout=1.5)

    assert _status_polls(polyai_connection, in_progress) == 1
    assert _status_polls(polyai_connection, ringing) >= 3


async def test_batch_trigger_bounds_requests_in_flight(polyai_connection, monkeypatch):
    from airflow_provider_polyai.hooks.polyai import PolyAIHook

    sids = _place_calls(polyai_connection, {f"+1415555013{digit}": dict(QUICK) for digit in range(6)})
    requests.post(
        f"{polyai_connection.base_url}/_local/faults",
        json={"endpoint": "status", "faults": ["slow:0.2"] * 12},
        timeout=10,
    ).raise_for_status()
    in_flight = 0
    most_in_flight = 0
    real_read = PolyAIHook.aget_call_status

    async def counting_read(self, call_sid, **kwargs):
        nonlocal in_flight, most_in_flight
        in_flight += 1
        most_in_flight = max(most_in_flight, in_flight)
        try:
            return await real_read(self, call_sid, **kwargs)
        finally:
            in_flight -= 1

    monkeypatch.setattr(PolyAIHook, "aget_call_status", counting_read)
    trigger = OutboundCallsBatchTrigger(
        call_sids=list(sids.values()), poke_interval=0.01, in_progress_poke_interval=0.05, max_concurrency=2
    )

    event = await _first_event(trigger)

    assert event.payload["event"] == "terminal"
    assert most_in_flight == 2


async def test_batch_trigger_reports_unknown_sid_as_error(polyai_connection):
    sids = _place_calls(polyai_connection, {"+14155550140": {"queued_seconds": 600}})
    known = sids["+14155550140"]
    trigger = OutboundCallsBatchTrigger(call_sids=[known, UNKNOWN_SID], poke_interval=0.05)

    event = await _first_event(trigger)

    assert event.payload["event"] == "error"
    assert UNKNOWN_SID in event.payload["message"]
    assert known in event.payload["pending"]


async def test_batch_trigger_times_out_with_last_statuses(polyai_connection):
    import time

    sids = _place_calls(polyai_connection, {"+14155550150": {"queued_seconds": 0, "ringing_seconds": 600}})
    call_sid = sids["+14155550150"]
    trigger = OutboundCallsBatchTrigger(call_sids=[call_sid], poke_interval=0.05, deadline=time.time() + 0.5)

    event = await _first_event(trigger)

    assert event.payload["event"] == "timeout"
    assert event.payload["pending"] == {call_sid: "ringing"}


async def test_batch_trigger_retries_server_errors(polyai_connection):
    sids = _place_calls(polyai_connection, {"+14155550160": dict(QUICK)})
    call_sid = sids["+14155550160"]
    requests.post(
        f"{polyai_connection.base_url}/_local/faults",
        json={"endpoint": "status", "call_sid": call_sid, "faults": ["503", "reset", "not-json"]},
        timeout=10,
    ).raise_for_status()
    trigger = OutboundCallsBatchTrigger(call_sids=[call_sid], poke_interval=0.01, in_progress_poke_interval=0.05)

    event = await _first_event(trigger)

    assert event.payload["outcomes"][call_sid]["status"] == "completed"


@pytest.mark.polyai_time_scale(10)
async def test_batch_trigger_ends_task_from_triggerer(polyai_connection):
    from airflow.triggers.base import TaskSuccessEvent

    sids = _place_calls(polyai_connection, {"+14155550170": dict(QUICK)})
    call_sid = sids["+14155550170"]
    trigger = OutboundCallsBatchTrigger(call_sids=[call_sid], poke_interval=0.05, end_from_trigger=True)
    # A triggerer sets the task instance before running a trigger; any object stands in for it here.
    trigger.task_instance = SimpleNamespace(task_id="wait")

    event = await _first_event(trigger)

    assert isinstance(event, TaskSuccessEvent)
    assert event.xcoms["return_value"] == {
        call_sid: {"status": "completed", "reason": "call ended normally", "outcome": "completed"}
    }
    assert event.xcoms["counts"] == {"completed": 1}
    assert event.xcoms["outcome_counts"] == {"completed": 1}


@pytest.mark.polyai_time_scale(10)
async def test_batch_trigger_resumes_worker_on_failure_status(polyai_connection):
    from airflow.triggers.base import TaskSuccessEvent

    sids = _place_calls(polyai_connection, {"+14155550175": {**QUICK, "status": "busy"}})
    trigger = OutboundCallsBatchTrigger(
        call_sids=list(sids.values()), poke_interval=0.05, end_from_trigger=True, failure_statuses=["busy"]
    )
    trigger.task_instance = SimpleNamespace(task_id="wait")

    event = await _first_event(trigger)

    assert not isinstance(event, TaskSuccessEvent)
    assert event.payload["counts"] == {"busy": 1}


# -- sensor --------------------------------------------------------------------------------------


class _RecordingTaskInstance:
    def __init__(self) -> None:
        self.xcoms: dict[str, object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.xcoms[key] = value


def test_batch_sensor_rejects_zero_concurrency():
    with pytest.raises(PolyAIInvalidInputError, match="max_concurrency"):
        OutboundCallsBatchSensor(task_id="wait", call_sids=[UNKNOWN_SID], max_concurrency=0)


def test_batch_sensor_fails_after_pushing_outcomes():
    sensor = OutboundCallsBatchSensor(task_id="wait", call_sids=[UNKNOWN_SID], failure_statuses=["busy"])
    ti = _RecordingTaskInstance()
    event = {
        "event": "terminal",
        "outcomes": {UNKNOWN_SID: {"status": "busy", "reason": "line busy"}},
        "counts": {"busy": 1},
        "pending": {},
        "message": "",
    }

    with pytest.raises(AirflowFailException, match="1 of 1 calls"):
        sensor.execute_complete({"ti": ti}, event)

    assert ti.xcoms["return_value"] == {UNKNOWN_SID: {"status": "busy", "reason": "line busy", "outcome": "busy"}}
    assert ti.xcoms[XCOM_COUNTS_KEY] == {"busy": 1}
    assert ti.xcoms[XCOM_OUTCOME_COUNTS_KEY] == {"busy": 1}


def test_batch_sensor_timeout_names_pending_calls():
    from airflow_provider_polyai.waiting import AirflowSensorTimeout

    sensor = OutboundCallsBatchSensor(task_id="wait", call_sids=[UNKNOWN_SID])
    event = {"event": "timeout", "outcomes": {}, "pending": {UNKNOWN_SID: "ringing"}, "message": "1 of 1 calls"}

    with pytest.raises(AirflowSensorTimeout, match=f"{UNKNOWN_SID} \\(ringing\\)"):
        sensor.execute_complete({"ti": _RecordingTaskInstance()}, event)


def _poke_until_due(sensor, context) -> bool:
    """Poke once after the earliest due time has passed, so that every poke reads a status."""
    time.sleep(sensor.poke_interval * 2)
    return sensor.poke(context)


def test_batch_sensor_poke_logs_ended_count_once(polyai_connection, capfd):
    sids = _place_calls(polyai_connection, {"+14155550230": {"queued_seconds": 0, "ringing_seconds": 600}})
    sensor = OutboundCallsBatchSensor(
        task_id="wait", call_sids=list(sids.values()), deferrable=False, mode="poke", poke_interval=0.05
    )
    context = {"ti": _RecordingTaskInstance()}
    capfd.readouterr()

    pokes = [_poke_until_due(sensor, context) for _ in range(3)]

    out, err = capfd.readouterr()
    ended_lines = [line for line in (out + err).splitlines() if "calls ended" in line]
    assert pokes == [False, False, False]
    assert _status_polls(polyai_connection, sids["+14155550230"]) == 3
    assert len(ended_lines) == 1
    assert "0 of 1 calls ended" in ended_lines[0]


def test_batch_sensor_poke_failure_names_next_poll(polyai_connection, capfd, monkeypatch):
    from airflow_provider_polyai.hooks.polyai import PolyAIHook

    sids = _place_calls(polyai_connection, {"+14155550235": {"queued_seconds": 600}})
    call_sid = sids["+14155550235"]
    sensor = OutboundCallsBatchSensor(
        task_id="wait", call_sids=[call_sid], deferrable=False, mode="poke", poke_interval=0.5
    )
    # One request per poll, so the poll fails without waiting for the hook's retries.
    monkeypatch.setattr(sensor, "_hook", lambda: PolyAIHook(max_attempts=1))
    context = {"ti": _RecordingTaskInstance()}
    # A first successful poll leaves a due time that has passed by the failing poll.
    sensor.poke(context)
    requests.post(
        f"{polyai_connection.base_url}/_local/faults",
        json={"endpoint": "status", "call_sid": call_sid, "faults": ["503"]},
        timeout=10,
    ).raise_for_status()
    capfd.readouterr()

    done = _poke_until_due(sensor, context)

    out, err = capfd.readouterr()
    failures = [line for line in (out + err).splitlines() if "status poll failed" in line]
    assert done is False
    assert len(failures) == 1
    assert "next poll in 0.5 s" in failures[0]
    assert sensor._get_next_poke_interval(0.0, lambda: 0.0, 1) > 0.4


def _run_batch_dag(server, dag_id: str, numbers_scenarios: dict[str, dict], **sensor_kwargs):
    from airflow.sdk import DAG

    from airflow_provider_polyai.operators.outbound_call import TriggerOutboundCallOperator

    requests.post(f"{server.base_url}/_local/scenarios", json=numbers_scenarios, timeout=10).raise_for_status()
    with DAG(dag_id=dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
        place = TriggerOutboundCallOperator.partial(task_id="place").expand(to_number=list(numbers_scenarios))
        OutboundCallsBatchSensor(
            task_id="wait", call_sids=place.output, poke_interval=0.1, in_progress_poke_interval=0.2, **sensor_kwargs
        )
    sync_dag_to_db(dag)
    run = dag.test()
    return run, run.get_task_instance("wait")


@pytest.mark.parametrize("mode", ["deferrable", "poke", "reschedule"])
@pytest.mark.polyai_time_scale(10)
def test_batch_sensor_run_pushes_outcomes(airflow_db, polyai_connection, mode):
    from airflow.utils.state import TaskInstanceState

    options = {"deferrable": True} if mode == "deferrable" else {"deferrable": False, "mode": mode}
    _, ti = _run_batch_dag(
        polyai_connection,
        f"test_batch_sensor_{mode}",
        {"+14155550180": dict(QUICK), "+14155550185": {**QUICK, "status": "busy", "reason": "line busy"}},
        **options,
    )

    assert ti.state == TaskInstanceState.SUCCESS
    outcomes = ti.xcom_pull(task_ids="wait")
    assert sorted(outcome["status"] for outcome in outcomes.values()) == ["busy", "completed"]
    assert ti.xcom_pull(task_ids="wait", key=XCOM_COUNTS_KEY) == {"busy": 1, "completed": 1}


@pytest.mark.polyai_time_scale(10)
def test_batch_sensor_run_fails_on_failure_status(airflow_db, polyai_connection):
    from airflow.utils.state import TaskInstanceState

    _, ti = _run_batch_dag(
        polyai_connection,
        "test_batch_sensor_failure_status",
        {"+14155550190": dict(QUICK), "+14155550196": {**QUICK, "status": "failed", "reason": "carrier"}},
        failure_statuses=["failed"],
    )

    assert ti.state == TaskInstanceState.FAILED
    assert ti.xcom_pull(task_ids="wait", key=XCOM_COUNTS_KEY) == {"completed": 1, "failed": 1}


# -- API generations ---------------------------------------------------------------------------


def _use_generation(server, monkeypatch, generation: str) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_POLYAI_DEFAULT", server.connection_json(api_generation=generation))


@pytest.mark.polyai_time_scale(10)
async def test_batch_trigger_agents_failure_resumes_worker(polyai_server, monkeypatch):
    from airflow.triggers.base import TaskSuccessEvent

    from airflow_provider_polyai.hooks.polyai import PolyAIHook

    _use_generation(polyai_server, monkeypatch, "agents")
    requests.post(
        f"{polyai_server.base_url}/_local/scenarios",
        json={"+14155550210": dict(QUICK), "+14155550215": {**QUICK, "status": "busy", "reason": "line busy"}},
        timeout=10,
    ).raise_for_status()
    hook = PolyAIHook()
    call_sids = [hook.trigger_call("+14155550210"), hook.trigger_call("+14155550215")]
    trigger = OutboundCallsBatchTrigger(
        call_sids=call_sids, poke_interval=0.05, end_from_trigger=True, failure_statuses=["failed"]
    )
    trigger.task_instance = SimpleNamespace(task_id="wait")

    event = await _first_event(trigger)

    assert not isinstance(event, TaskSuccessEvent)
    assert event.payload["outcomes"][call_sids[1]]["outcome"] == "failed"
    assert event.payload["counts"] == {"FAILURE": 1, "SUCCESS": 1}
    assert event.payload["outcome_counts"] == {"completed": 1, "failed": 1}
    assert event.payload["generation"] == "agents"


@pytest.mark.parametrize(
    ("generation", "mode"), [("v1", "deferrable"), ("agents", "deferrable"), ("agents", "poke")]
)
@pytest.mark.polyai_time_scale(10)
def test_batch_sensor_generation_fails_on_failed_outcome(airflow_db, polyai_server, monkeypatch, generation, mode):
    from airflow.utils.state import TaskInstanceState

    _use_generation(polyai_server, monkeypatch, generation)
    options = {"deferrable": True} if mode == "deferrable" else {"deferrable": False, "mode": mode}
    busy_number = "+14155550225"
    _, ti = _run_batch_dag(
        polyai_server,
        f"test_batch_sensor_{generation}_{mode}_failed_outcome",
        {"+14155550220": dict(QUICK), busy_number: {**QUICK, "status": "busy", "reason": "line busy"}},
        failure_statuses=("failed",),
        **options,
    )

    failure = {"v1": "failure", "agents": "FAILURE"}[generation]
    success = {"v1": "success", "agents": "SUCCESS"}[generation]
    outcomes = ti.xcom_pull(task_ids="wait")
    assert ti.state == TaskInstanceState.FAILED
    assert sorted(entry["outcome"] for entry in outcomes.values()) == ["completed", "failed"]
    assert sorted(entry["status"] for entry in outcomes.values()) == sorted([failure, success])
    assert ti.xcom_pull(task_ids="wait", key=XCOM_COUNTS_KEY) == {failure: 1, success: 1}
    assert ti.xcom_pull(task_ids="wait", key=XCOM_OUTCOME_COUNTS_KEY) == {"completed": 1, "failed": 1}


def test_batch_sensor_rejects_other_generation_raw_status():
    sensor = OutboundCallsBatchSensor(task_id="wait", call_sids=[UNKNOWN_SID], failure_statuses=["failure"])
    ti = _RecordingTaskInstance()
    event = {
        "event": "terminal",
        "outcomes": {UNKNOWN_SID: {"status": "FAILURE", "reason": "line busy", "outcome": "failed"}},
        "pending": {},
        "generation": "agents",
        "message": "",
    }

    with pytest.raises(PolyAIInvalidInputError, match=r"never reports"):
        sensor.execute_complete({"ti": ti}, event)

    assert ti.xcoms[XCOM_OUTCOME_COUNTS_KEY] == {"failed": 1}


def test_batch_sensor_completes_event_without_outcome():
    sensor = OutboundCallsBatchSensor(task_id="wait", call_sids=[UNKNOWN_SID], failure_statuses=["failed"])
    ti = _RecordingTaskInstance()
    # An event from a trigger serialized before entries carried an outcome.
    event = {
        "event": "terminal",
        "outcomes": {UNKNOWN_SID: {"status": "failure", "reason": "carrier"}},
        "pending": {},
        "generation": "v1",
        "message": "",
    }

    with pytest.raises(AirflowFailException, match="1 of 1 calls"):
        sensor.execute_complete({"ti": ti}, event)

    assert ti.xcoms["return_value"][UNKNOWN_SID]["outcome"] == "failed"


# -- example DAG ---------------------------------------------------------------------------------


@pytest.mark.polyai_time_scale(20)
def test_mapped_and_batch_example_dag_succeeds(airflow_db, polyai_connection):
    from airflow.utils.state import DagRunState

    DagBag = dagbag_module().DagBag

    dagbag = DagBag(dag_folder=str(EXAMPLE_DAGS / "example_polyai_mapped_and_batch.py"))
    dag = dagbag.get_dag("example_polyai_mapped_and_batch")
    assert dag is not None, dagbag.import_errors
    sync_dag_to_db(dag)

    run = dag.test()

    assert run.state == DagRunState.SUCCESS
    each = [ti for ti in run.get_task_instances() if ti.task_id == "wait_each"]
    assert len(each) == 4
    counts = run.get_task_instance("summarize").xcom_pull(task_ids="summarize")
    assert counts == {"completed": 3, "no-answer": 1}
