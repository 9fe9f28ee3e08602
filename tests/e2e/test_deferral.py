"""Deferred waits on a real scheduler and triggerer: restarts, deadlines, HA triggerers, worker slots."""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path

import psutil
import pytest

from tests.e2e.cluster import AirflowCluster, wait_until
from tests.e2e.dags.polyai_e2e_dags import (
    DEADLINE_NUMBER,
    DEADLINE_TIMEOUT_SECONDS,
    HA_NUMBERS,
    RESTART_NUMBER,
    RESTART_TIMEOUT_SECONDS,
    SLOTS_NUMBER,
)
from tests.e2e.dags.polyai_e2e_deferral_timeout import DEFERRAL_TIMEOUT_NUMBER

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SENSOR = "wait_for_call"
PLACE = "place_call"


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _terminal_polls(cluster: AirflowCluster, call_sid: str, status: str) -> list[dict]:
    return [poll for poll in cluster.status_polls(call_sid) if poll.get("call_status") == status]


def _trigger_logs(cluster: AirflowCluster, dag_id: str, run_id: str, map_index: int = -1) -> list[Path]:
    """Return the sensor's trigger log files; each triggerer job that ran its trigger writes one."""
    files = cluster.task_log_files(dag_id, run_id, SENSOR)
    if map_index >= 0:
        files = [path for path in files if path.parent.name == f"map_index={map_index}"]
    return [path for path in files if ".log.trigger." in path.name]


def _wait_for_trigger_polls(cluster: AirflowCluster, call_sid: str) -> None:
    """Wait until a trigger has polled the call: the sensor's own poll is the first one."""
    wait_until(lambda: len(cluster.status_polls(call_sid)) >= 2, timeout=120, what=f"a trigger to poll {call_sid}")


def _executor_processes(pgid: int, text: str) -> list[str]:
    """Return the titles of live processes in process group ``pgid`` that contain ``text``.

    LocalExecutor workers title themselves ``airflow worker -- LocalExecutor: <idle>`` or with the id
    of the task instance they run, and the task process ``airflow worker -- <task instance id>``.
    """
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if os.getpgid(proc.pid) != pgid or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
        except (ProcessLookupError, psutil.Error):
            continue
        title = " ".join(proc.info["cmdline"] or ())
        if text in title:
            found.append(title)
    return found


def test_sensor_survives_triggerer_kill(cluster: AirflowCluster) -> None:
    dag_id = "polyai_e2e_restart"
    cluster.script_calls(
        {RESTART_NUMBER: {"queued_seconds": 1, "ringing_seconds": 1, "in_progress_seconds": 20}}
    )
    cluster.wait_for_dag(dag_id)
    run_id = cluster.trigger(dag_id)

    deferred = cluster.wait_for_task(dag_id, run_id, SENSOR, {"deferred"}, timeout=120)
    call_sid = cluster.xcom(dag_id, run_id, PLACE)
    _wait_for_trigger_polls(cluster, call_sid)
    (old_triggerer,) = cluster.triggerers()
    cluster.kill(old_triggerer)
    killed_at = time.time()
    cluster.start_triggerer()

    finished = cluster.wait_for_task(dag_id, run_id, SENSOR, {"success", "failed"}, timeout=180)

    assert finished["state"] == "success"
    assert finished["try_number"] == 1
    outcome = cluster.xcom(dag_id, run_id, SENSOR)
    assert outcome["call_sid"] == call_sid
    assert outcome["status"] == "completed"
    assert outcome["reason"] == "call ended normally"
    assert cluster.xcom(dag_id, run_id, SENSOR, key="status") == "completed"
    assert cluster.xcom(dag_id, run_id, SENSOR, key="reason") == "call ended normally"
    # Both triggerer jobs ran the trigger in turn, the new one polled after the kill, and only one
    # poll saw the call end.
    assert len(_trigger_logs(cluster, dag_id, run_id)) == 2
    (terminal_poll,) = _terminal_polls(cluster, call_sid, "completed")
    assert terminal_poll["time"] > killed_at
    elapsed = (_time(finished["end_date"]) - _time(deferred["start_date"])).total_seconds()
    assert elapsed < RESTART_TIMEOUT_SECONDS
    assert cluster.wait_for_run(dag_id, run_id) == "success"


def test_sensor_deadline_passes_while_triggerer_down(cluster: AirflowCluster) -> None:
    dag_id = "polyai_e2e_deadline"
    # The call outlasts the test, so only the sensor's deadline can end the wait.
    cluster.script_calls(
        {DEADLINE_NUMBER: {"queued_seconds": 1, "ringing_seconds": 1, "in_progress_seconds": 600}}
    )
    cluster.wait_for_dag(dag_id)
    run_id = cluster.trigger(dag_id)

    deferred = cluster.wait_for_task(dag_id, run_id, SENSOR, {"deferred"}, timeout=120)
    call_sid = cluster.xcom(dag_id, run_id, PLACE)
    _wait_for_trigger_polls(cluster, call_sid)
    for name in cluster.triggerers():
        cluster.kill(name)
    # The sensor computed its deadline after its start_date, so this moment is past it.
    deadline_passed = _time(deferred["start_date"]).timestamp() + DEADLINE_TIMEOUT_SECONDS + 1
    time.sleep(max(0.0, deadline_passed - time.time()))
    assert cluster.task_instance(dag_id, run_id, SENSOR)["state"] == "deferred"
    restarted_at = time.time()
    cluster.start_triggerer()

    finished = cluster.wait_for_task(dag_id, run_id, SENSOR, {"success", "failed", "up_for_retry"}, timeout=180)

    assert finished["state"] == "failed"
    # A sensor timeout is final even with retries left.
    assert finished["try_number"] == 1
    # A fresh timeout would have polled the call for another DEADLINE_TIMEOUT_SECONDS.
    assert [poll for poll in cluster.status_polls(call_sid) if poll["time"] > restarted_at] == []
    logs = "\n".join(path.read_text(errors="replace") for path in cluster.task_log_files(dag_id, run_id, SENSOR))
    assert "AirflowSensorTimeout" in logs
    assert "did not reach a terminal status before the sensor's timeout" in logs


def test_operator_deferral_timeout_is_final(cluster: AirflowCluster) -> None:
    dag_id = "polyai_e2e_deferral_timeout"
    cluster.script_calls(
        {DEFERRAL_TIMEOUT_NUMBER: {"queued_seconds": 1, "ringing_seconds": 1, "in_progress_seconds": 600}}
    )
    cluster.wait_for_dag(dag_id)
    run_id = cluster.trigger(dag_id)
    cluster.wait_for_task(dag_id, run_id, PLACE, {"deferred"}, timeout=120)
    # With no triggerer, only the scheduler's deferral timeout can end the wait.
    for name in cluster.triggerers():
        cluster.kill(name)

    finished = cluster.wait_for_task(dag_id, run_id, PLACE, {"failed", "up_for_retry"}, timeout=120)

    assert finished["state"] == "failed"
    assert finished["try_number"] == 1
    assert len(cluster.calls_to(DEFERRAL_TIMEOUT_NUMBER)) == 1
    logs = "\n".join(path.read_text(errors="replace") for path in cluster.task_log_files(dag_id, run_id, PLACE))
    assert "AirflowSensorTimeout" in logs


def test_ha_triggerers_finish_each_task_once(cluster: AirflowCluster) -> None:
    dag_id = "polyai_e2e_ha"
    cluster.script_calls(
        {number: {"queued_seconds": 1, "ringing_seconds": 1, "in_progress_seconds": 12} for number in HA_NUMBERS}
    )
    cluster.wait_for_dag(dag_id)
    for name in cluster.triggerers():
        cluster.stop_component(name)
    # Two triggers each, so both triggerers must take part in the four waits.
    cluster.start_triggerer(capacity=2)
    cluster.start_triggerer(capacity=2)
    run_id = cluster.trigger(dag_id)

    assert cluster.wait_for_run(dag_id, run_id, timeout=240) == "success"

    triggerer_jobs = set()
    for map_index, number in enumerate(HA_NUMBERS):
        tries = cluster.task_tries(dag_id, run_id, SENSOR, map_index)
        assert [ti["state"] for ti in tries] == ["success"]
        call_sid = cluster.xcom(dag_id, run_id, PLACE, map_index=map_index)
        assert cluster.xcom(dag_id, run_id, SENSOR, map_index=map_index)["call_sid"] == call_sid
        assert len(cluster.calls_to(number)) == 1
        # A second trigger on the same call would also poll until it saw the call end.
        assert len(_terminal_polls(cluster, call_sid, "completed")) == 1
        # A trigger may move to the other triggerer when one of them is slow to heartbeat on a
        # loaded machine. Each triggerer that ran it writes its own log, but only one may fire.
        logs = _trigger_logs(cluster, dag_id, run_id, map_index)
        fired = [log for log in logs if "Trigger fired event" in log.read_text()]
        assert len(fired) == 1
        assert fired[0].read_text().count("Trigger fired event") == 1
        triggerer_jobs.add(fired[0].name.rsplit(".", 2)[-2])
    assert len(triggerer_jobs) == 2


def test_deferred_sensor_holds_no_worker(cluster: AirflowCluster, record_property) -> None:
    dag_id = "polyai_e2e_slots"
    cluster.script_calls({SLOTS_NUMBER: {"queued_seconds": 1, "ringing_seconds": 1, "in_progress_seconds": 15}})
    cluster.wait_for_dag(dag_id)
    scheduler_group = cluster.components["scheduler"].pgid
    # Workers of earlier tests' tasks take a few seconds to wind down. Starting from an idle
    # executor means every busy worker seen below belongs to this test.
    wait_until(
        lambda: len(_executor_processes(scheduler_group, "LocalExecutor: <idle>")) == cluster.parallelism,
        timeout=60,
        what="every executor worker to be idle",
    )
    run_id = cluster.trigger(dag_id)
    deferred = cluster.wait_for_task(dag_id, run_id, SENSOR, {"deferred"}, timeout=120)
    deferred_at = time.monotonic()
    # The executor's worker process reports the deferral and then takes a moment to wind down.
    wait_until(
        lambda: not _executor_processes(scheduler_group, deferred["id"]),
        timeout=30,
        what="the executor worker to release the deferred sensor",
    )
    released_seconds = time.monotonic() - deferred_at
    # On a loaded machine the upstream task's worker can report its end seconds after the sensor
    # has deferred. Until then it still counts as a worker on this run.
    place_id = cluster.task_instance(dag_id, run_id, PLACE)["id"]
    wait_until(
        lambda: not _executor_processes(scheduler_group, place_id),
        timeout=30,
        what="the executor worker to release the upstream task",
    )

    samples = []
    while cluster.task_instance(dag_id, run_id, SENSOR)["state"] == "deferred":
        run_tis = cluster.task_instances(dag_id, run_id)
        workers = _executor_processes(scheduler_group, "LocalExecutor: ")
        sample = {
            "running_tis": [ti["task_id"] for ti in run_tis if ti["state"] == "running"],
            "pool": cluster.pool(),
            "sensor_processes": _executor_processes(scheduler_group, deferred["id"]),
            # A task left over from an earlier test's DAG run may take a worker meanwhile. The
            # check is that no worker runs a task of this run.
            "workers_on_this_run": [
                title for title in workers if any(ti["id"] in title for ti in run_tis)
            ],
            "workers": len(workers),
        }
        # The trigger can fire while the sample is taken, and the scheduler then hands the
        # downstream task to a worker. Only a sample taken wholly inside the deferral counts.
        if cluster.task_instance(dag_id, run_id, SENSOR)["state"] != "deferred":
            break
        samples.append(sample)
        time.sleep(0.5)
    deferred_seconds = time.monotonic() - deferred_at
    record_property("deferred_seconds", round(deferred_seconds, 1))
    record_property("worker_release_seconds", round(released_seconds, 1))
    print(
        f"sensor deferred for {deferred_seconds:.1f} s; its worker was free after {released_seconds:.1f} s; "
        f"{len(samples)} samples"
    )

    assert samples, "the sensor left the deferred state before the worker was released"
    for sample in samples:
        assert sample["running_tis"] == []
        assert sample["pool"]["running_slots"] == 0
        assert sample["pool"]["deferred_slots"] == 1
        assert sample["sensor_processes"] == []
        assert sample["workers_on_this_run"] == []
        assert sample["workers"] == cluster.parallelism
    finished = cluster.wait_for_task(dag_id, run_id, SENSOR, {"success", "failed"}, timeout=120)
    assert finished["state"] == "success"
