"""A retried or cleared call task on a real scheduler reuses its call and never dials twice."""

from __future__ import annotations

from datetime import datetime

import pytest

from tests.e2e.cluster import AirflowCluster, wait_until
from tests.e2e.dags.polyai_e2e_dags import (
    CLEAR_NUMBER,
    RETRY_DEADLINE_NUMBER,
    RETRY_DELAY_SECONDS,
    RETRY_EXECUTION_TIMEOUT_SECONDS,
    RETRY_NUMBER,
    RETRY_WAIT_TIMEOUT_SECONDS,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PLACE = "place_call"


def _log_of_try(cluster: AirflowCluster, dag_id: str, run_id: str, try_number: int) -> str:
    paths = [p for p in cluster.task_log_files(dag_id, run_id, PLACE) if p.name == f"attempt={try_number}.log"]
    return "\n".join(path.read_text(errors="replace") for path in paths)


def test_operator_retry_reuses_call(cluster: AirflowCluster) -> None:
    dag_id = "polyai_e2e_retry"
    # The call ends after the first try's execution_timeout and before the retry delay is over,
    # so try 1 always times out while waiting and try 2 finds the call ended.
    call_seconds = RETRY_EXECUTION_TIMEOUT_SECONDS + RETRY_DELAY_SECONDS - 1
    assert call_seconds > RETRY_EXECUTION_TIMEOUT_SECONDS
    cluster.script_calls(
        {RETRY_NUMBER: {"queued_seconds": 1, "ringing_seconds": 1, "in_progress_seconds": call_seconds - 2}}
    )
    cluster.wait_for_dag(dag_id)
    run_id = cluster.trigger(dag_id)

    assert cluster.wait_for_run(dag_id, run_id, timeout=180) == "success"

    calls = cluster.calls_to(RETRY_NUMBER)
    assert len(calls) == 1
    call_sid = calls[0]["call_sid"]
    tries = cluster.task_tries(dag_id, run_id, PLACE)
    assert [ti["try_number"] for ti in tries] == [1, 2]
    assert tries[-1]["state"] == "success"
    assert cluster.xcom(dag_id, run_id, PLACE) == call_sid
    assert cluster.xcom(dag_id, run_id, PLACE, key="status") == "completed"
    assert "AirflowTaskTimeout" in _log_of_try(cluster, dag_id, run_id, 1)
    assert f"already placed call {call_sid}" in _log_of_try(cluster, dag_id, run_id, 2)


def test_operator_retry_keeps_wait_deadline(cluster: AirflowCluster) -> None:
    dag_id = "polyai_e2e_retry_deadline"
    cluster.script_calls(
        {RETRY_DEADLINE_NUMBER: {"queued_seconds": 1, "ringing_seconds": 1, "in_progress_seconds": 600}}
    )
    cluster.wait_for_dag(dag_id)
    run_id = cluster.trigger(dag_id)

    assert cluster.wait_for_run(dag_id, run_id, timeout=180) == "failed"

    (call,) = cluster.calls_to(RETRY_DEADLINE_NUMBER)
    tries = cluster.task_tries(dag_id, run_id, PLACE)
    assert [ti["try_number"] for ti in tries] == [1, 2]
    assert tries[-1]["state"] == "failed"
    second_try_start = datetime.fromisoformat(tries[-1]["start_date"].replace("Z", "+00:00")).timestamp()
    # The wait_timeout ran out before try 2 began: one poll to report the status, then the timeout.
    # A wait that restarted on retry would poll once a second for another wait_timeout.
    polls = [poll for poll in cluster.status_polls(call["call_sid"]) if poll["time"] > second_try_start]
    assert len(polls) == 1
    log = _log_of_try(cluster, dag_id, run_id, 2)
    assert "AirflowSensorTimeout" in log
    assert f"within {RETRY_WAIT_TIMEOUT_SECONDS} s" in log


def test_cleared_operator_does_not_redial(cluster: AirflowCluster) -> None:
    dag_id = "polyai_e2e_clear"
    cluster.wait_for_dag(dag_id)
    run_id = cluster.trigger(dag_id)
    assert cluster.wait_for_run(dag_id, run_id, timeout=120) == "success"
    first_sid = cluster.xcom(dag_id, run_id, PLACE)

    cluster.clear_task(dag_id, run_id, [PLACE])
    rerun = wait_until(
        lambda: (ti := cluster.task_instance(dag_id, run_id, PLACE))["try_number"] == 2
        and ti["state"] in ("success", "failed")
        and ti,
        timeout=120,
        what="the cleared task to run again",
    )

    assert rerun["state"] == "success"
    assert len(cluster.calls_to(CLEAR_NUMBER)) == 1
    assert cluster.xcom(dag_id, run_id, PLACE) == first_sid
    assert f"already placed call {first_sid}" in _log_of_try(cluster, dag_id, run_id, 2)
