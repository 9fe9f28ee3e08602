"""TriggerOutboundCallOperator: placing, templating, waiting, and retries that never dial twice."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timedelta

import pytest
import requests

from airflow.sdk import DAG

from airflow_provider_polyai.exceptions import PolyAICallOutcomeUnknownError, PolyAIInvalidInputError
from airflow_provider_polyai.operators.outbound_call import CALL_RECORD_KEY, TriggerOutboundCallOperator
from airflow_provider_polyai.triggers.outbound_call import OutboundCallStatusTrigger
from airflow_provider_polyai.version_compat import AIRFLOW_V_3_3_PLUS
from airflow_provider_polyai.waiting import DEFERRAL_TIMEOUT_GRACE_SECONDS
from tests.compat import AirflowFailException, AirflowSensorTimeout, TaskDeferred, requires_task_state_store
from tests.conftest import sync_dag_to_db

COMPLETED_NUMBER = "+14155550160"
BUSY_NUMBER = "+14155550165"


class _RecordingTaskInstance:
    """Test double for the task instance in direct ``execute`` calls. It records XCom pushes."""

    def __init__(self, try_number: int = 1) -> None:
        self.try_number = try_number
        self.xcoms: dict[str, object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.xcoms[key] = value


class _FailAfterDialOnFirstTry(TriggerOutboundCallOperator):
    """Fails its first try after placing the call, as a worker lost mid-task would."""

    def execute(self, context):
        call_sid = super().execute(context)
        if context["ti"].try_number == 1:
            raise RuntimeError("simulated worker loss after the call was placed")
        return call_sid


class _LoseWorkerOnUnknownOutcome(TriggerOutboundCallOperator):
    """Turns the first try's unknown-outcome failure into a retryable one, as a killed worker would."""

    def execute(self, context):
        try:
            return super().execute(context)
        except PolyAICallOutcomeUnknownError as err:
            if context["ti"].try_number == 1:
                raise RuntimeError("simulated worker loss during the trigger request") from err
            raise


def _admin(server, action: str, payload: dict) -> None:
    requests.post(f"{server.base_url}/_local/{action}", json=payload, timeout=5).raise_for_status()


def _calls(server) -> list[dict]:
    return requests.get(f"{server.base_url}/_local/calls", timeout=5).json()


def _trigger_requests(server) -> list[dict]:
    entries = requests.get(f"{server.base_url}/_local/requests", timeout=5).json()
    return [entry for entry in entries if entry["method"] == "POST"]


def _run(request, operator_class=TriggerOutboundCallOperator, *, params: dict | None = None, **kwargs):
    """Run a one-task DAG with ``operator_class(**kwargs)`` through dag.test(). Return the run and TI."""
    dag_id = re.sub(r"\W", "_", request.node.name)
    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False, params=params or {}) as dag:
        options = {"poke_interval": 0.1, "in_progress_poke_interval": 0.2, **kwargs}
        operator_class(task_id="place", **options)
    sync_dag_to_db(dag)
    run = dag.test()
    return run, run.get_task_instance("place")


def _stored_record(ti) -> dict | None:
    from sqlalchemy import select

    from airflow.models.task_state_store import TaskStateStoreModel
    from airflow.utils.session import create_session

    with create_session() as session:
        value = session.scalar(
            select(TaskStateStoreModel.value).where(
                TaskStateStoreModel.dag_id == ti.dag_id,
                TaskStateStoreModel.run_id == ti.run_id,
                TaskStateStoreModel.task_id == ti.task_id,
                TaskStateStoreModel.key == CALL_RECORD_KEY,
            )
        )
    return None if value is None else json.loads(value)


# -- placing a call -----------------------------------------------------------------------------


def test_operator_run_returns_sid_and_pushes_xcom(airflow_db, polyai_connection, request):
    _, ti = _run(request, to_number=COMPLETED_NUMBER)

    [call] = _calls(polyai_connection)
    assert ti.state == "success"
    assert ti.xcom_pull(task_ids="place") == call["call_sid"]
    assert ti.xcom_pull(task_ids="place", key="call_sid") == call["call_sid"]


def test_operator_run_renders_templated_fields(airflow_db, polyai_connection, request):
    run, ti = _run(
        request,
        params={"number": "020 7183 8750", "region": "GB"},
        to_number="{{ params.number }}",
        country_code="{{ params.region }}",
        metadata={"run_id": "{{ run_id }}", "task": "{{ ti.task_id }}"},
        encryption="UDP/RTP",
    )

    [call] = _calls(polyai_connection)
    assert ti.state == "success"
    assert call["to_number"] == "+442071838750"
    assert call["country_code"] == "GB"
    assert call["encryption"] == "UDP/RTP"
    assert call["metadata"] == {"run_id": run.run_id, "task": "place"}


def test_operator_run_accepts_templated_json_metadata(airflow_db, polyai_connection, request):
    run, _ = _run(request, to_number=COMPLETED_NUMBER, metadata='{"run_id": "{{ run_id }}"}')

    [call] = _calls(polyai_connection)
    assert call["metadata"] == {"run_id": run.run_id}


def test_operator_run_invalid_number_fails_without_request(airflow_db, polyai_connection, request):
    _, ti = _run(request, to_number="12345", retries=2)

    assert ti.state == "failed"
    assert ti.try_number == 1
    assert _trigger_requests(polyai_connection) == []


def test_operator_templated_fields():
    assert {"to_number", "country_code", "metadata"} <= set(TriggerOutboundCallOperator.template_fields)


# -- waiting for the outcome --------------------------------------------------------------------


@pytest.mark.polyai_time_scale(20)
@pytest.mark.parametrize("deferrable", [True, False], ids=["deferrable", "worker"])
def test_operator_run_waits_for_completion(airflow_db, polyai_connection, request, deferrable):
    _, ti = _run(request, to_number=COMPLETED_NUMBER, wait_for_completion=True, deferrable=deferrable)

    [call] = _calls(polyai_connection)
    assert ti.state == "success"
    assert ti.xcom_pull(task_ids="place") == call["call_sid"]
    assert ti.xcom_pull(task_ids="place", key="call_sid") == call["call_sid"]
    assert ti.xcom_pull(task_ids="place", key="status") == "completed"
    assert ti.xcom_pull(task_ids="place", key="reason") == "call ended normally"


@pytest.mark.polyai_time_scale(20)
@pytest.mark.parametrize("deferrable", [True, False], ids=["deferrable", "worker"])
def test_operator_run_failure_status_fails_with_xcom(airflow_db, polyai_connection, request, deferrable):
    _, ti = _run(
        request,
        to_number=BUSY_NUMBER,
        wait_for_completion=True,
        deferrable=deferrable,
        failure_statuses=["busy", "failed"],
        retries=2,
    )

    assert ti.state == "failed"
    assert ti.try_number == 1
    assert ti.xcom_pull(task_ids="place", key="call_sid").startswith("OUT-")
    assert ti.xcom_pull(task_ids="place", key="status") == "busy"
    assert ti.xcom_pull(task_ids="place", key="reason") == "destination busy"
    assert ti.xcom_pull(task_ids="place") == ti.xcom_pull(task_ids="place", key="call_sid")
    assert len(_calls(polyai_connection)) == 1


def test_operator_defers_with_deadline_from_wait_timeout(polyai_connection):
    operator = TriggerOutboundCallOperator(
        task_id="place", to_number=COMPLETED_NUMBER, wait_for_completion=True, deferrable=True, wait_timeout=90
    )
    context = {"ti": _RecordingTaskInstance()}

    before = time.time()
    with pytest.raises(TaskDeferred) as excinfo:
        operator.execute(context)
    after = time.time()

    trigger = excinfo.value.trigger
    [call] = _calls(polyai_connection)
    assert isinstance(trigger, OutboundCallStatusTrigger)
    assert trigger.call_sid == call["call_sid"]
    assert before + 90 <= trigger.deadline <= after + 90
    assert excinfo.value.timeout == timedelta(seconds=90 + DEFERRAL_TIMEOUT_GRACE_SECONDS)
    assert context["ti"].xcoms["call_sid"] == call["call_sid"]


def test_operator_worker_wait_times_out(polyai_connection):
    _admin(polyai_connection, "scenarios", {COMPLETED_NUMBER: {"queued_seconds": 0, "ringing_seconds": 600}})
    operator = TriggerOutboundCallOperator(
        task_id="place",
        to_number=COMPLETED_NUMBER,
        wait_for_completion=True,
        deferrable=False,
        wait_timeout=0.5,
        poke_interval=0.1,
    )

    with pytest.raises(AirflowSensorTimeout) as excinfo:
        operator.execute({"ti": _RecordingTaskInstance()})

    assert "last status 'ringing'" in str(excinfo.value)


def test_operator_execute_complete_returns_sid():
    operator = TriggerOutboundCallOperator(task_id="place", to_number=COMPLETED_NUMBER, wait_for_completion=True)
    context = {"ti": _RecordingTaskInstance()}
    sid = "OUT-550e8400-e29b-41d4-a716-446655440000"
    event = {"event": "terminal", "call_sid": sid, "status": "completed", "reason": "ok", "message": ""}

    assert operator.execute_complete(context, event) == sid
    assert context["ti"].xcoms["status"] == "completed"


# -- construction -------------------------------------------------------------------------------


@pytest.mark.parametrize("wait_timeout", [0, -5, timedelta(0)])
def test_operator_rejects_non_positive_wait_timeout(wait_timeout):
    with pytest.raises(ValueError):
        TriggerOutboundCallOperator(task_id="place", to_number=COMPLETED_NUMBER, wait_timeout=wait_timeout)


def test_operator_rejects_non_terminal_failure_status():
    with pytest.raises(PolyAIInvalidInputError):
        TriggerOutboundCallOperator(task_id="place", to_number=COMPLETED_NUMBER, failure_statuses=["queued"])


def test_operator_deferrable_follows_environment(monkeypatch):
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "false")

    assert TriggerOutboundCallOperator(task_id="place", to_number=COMPLETED_NUMBER).deferrable is False


def test_operator_deferrable_defaults_to_true(monkeypatch):
    monkeypatch.delenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", raising=False)

    assert TriggerOutboundCallOperator(task_id="place", to_number=COMPLETED_NUMBER).deferrable is True


# -- retries: the task state store keeps a person from being called twice ----------------------


@requires_task_state_store
def test_operator_retry_reuses_placed_call(airflow_db, polyai_connection, request):
    _, ti = _run(request, _FailAfterDialOnFirstTry, to_number=COMPLETED_NUMBER, retries=1, retry_delay=timedelta(0))

    [call] = _calls(polyai_connection)
    assert ti.state == "success"
    assert ti.try_number == 2
    assert ti.xcom_pull(task_ids="place") == call["call_sid"]
    assert _stored_record(ti) == {
        "call_sid": call["call_sid"],
        "to_number": COMPLETED_NUMBER,
        "placed_at": pytest.approx(time.time(), abs=300),
    }


@requires_task_state_store
@pytest.mark.polyai_time_scale(20)
def test_operator_retry_reuses_call_and_waits(airflow_db, polyai_connection, request):
    _, ti = _run(
        request,
        _FailAfterDialOnFirstTry,
        to_number=COMPLETED_NUMBER,
        wait_for_completion=True,
        deferrable=False,
        retries=1,
        retry_delay=timedelta(0),
    )

    [call] = _calls(polyai_connection)
    assert ti.try_number == 2
    assert ti.state == "success"
    assert ti.xcom_pull(task_ids="place", key="status") == "completed"
    assert ti.xcom_pull(task_ids="place", key="call_sid") == call["call_sid"]


@pytest.mark.skipif(AIRFLOW_V_3_3_PLUS, reason="Airflow 3.3+ reuses the call from the task state store")
def test_operator_retry_without_store_fails_instead_of_redialling(airflow_db, polyai_connection, request):
    _, ti = _run(request, _FailAfterDialOnFirstTry, to_number=COMPLETED_NUMBER, retries=2, retry_delay=timedelta(0))

    assert len(_calls(polyai_connection)) == 1
    # The second try cannot tell whether the first placed the call, so it fails for good.
    assert ti.state == "failed"
    assert ti.try_number == 2


def test_operator_redial_on_retry_dials_again(airflow_db, polyai_connection, request):
    _, ti = _run(
        request,
        _FailAfterDialOnFirstTry,
        to_number=COMPLETED_NUMBER,
        redial_on_retry=True,
        retries=1,
        retry_delay=timedelta(0),
    )

    first, second = _calls(polyai_connection)
    assert ti.state == "success"
    assert ti.xcom_pull(task_ids="place") == second["call_sid"]
    assert first["call_sid"] != second["call_sid"]


@requires_task_state_store
def test_operator_unknown_outcome_blocks_redial(airflow_db, polyai_connection, request):
    _admin(polyai_connection, "faults", {"endpoint": "trigger", "faults": ["502"]})

    _, ti = _run(request, _LoseWorkerOnUnknownOutcome, to_number=COMPLETED_NUMBER, retries=3, retry_delay=timedelta(0))

    assert ti.state == "failed"
    # The second try found the unknown-outcome record and failed without retries or a request.
    assert ti.try_number == 2
    assert len(_trigger_requests(polyai_connection)) == 1
    assert _stored_record(ti) == {"call_sid": None, "to_number": COMPLETED_NUMBER}


def test_operator_unknown_outcome_fails_without_retry(airflow_db, polyai_connection, request):
    _admin(polyai_connection, "faults", {"endpoint": "trigger", "faults": ["504"]})

    _, ti = _run(request, to_number=COMPLETED_NUMBER, retries=3, retry_delay=timedelta(0))

    assert ti.state == "failed"
    assert ti.try_number == 1
    assert len(_trigger_requests(polyai_connection)) == 1


@requires_task_state_store
def test_operator_rejected_trigger_clears_record(airflow_db, polyai_connection, request):
    # HTTP 400 means nothing was queued, so the record is dropped and a cleared task may dial.
    _admin(polyai_connection, "faults", {"endpoint": "trigger", "faults": ["400"]})

    _, ti = _run(request, to_number=COMPLETED_NUMBER)

    assert ti.state == "failed"
    assert _stored_record(ti) is None


@requires_task_state_store
def test_operator_missing_connection_does_not_block_retry(airflow_db, polyai_connection, request):
    # Nothing was sent, so the second try must report the missing connection again rather than
    # claim that an earlier trigger request may have placed a call.
    _, ti = _run(
        request, to_number=COMPLETED_NUMBER, polyai_conn_id="polyai_missing", retries=1, retry_delay=timedelta(0)
    )

    assert ti.state == "failed"
    assert ti.try_number == 2
    assert _stored_record(ti) is None
    assert _trigger_requests(polyai_connection) == []


def test_operator_without_store_refuses_second_try(polyai_connection):
    operator = TriggerOutboundCallOperator(task_id="place", to_number=COMPLETED_NUMBER)

    with pytest.raises(AirflowFailException) as excinfo:
        operator.execute({"ti": _RecordingTaskInstance(try_number=2)})

    assert "redial_on_retry" in str(excinfo.value)
    assert _calls(polyai_connection) == []


def test_operator_without_store_redials_when_asked(polyai_connection):
    operator = TriggerOutboundCallOperator(task_id="place", to_number=COMPLETED_NUMBER, redial_on_retry=True)

    call_sid = operator.execute({"ti": _RecordingTaskInstance(try_number=2)})

    assert [call["call_sid"] for call in _calls(polyai_connection)] == [call_sid]
