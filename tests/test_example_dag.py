"""The example DAG, run with dag.test() on a real metadata database against the local server."""

from __future__ import annotations

import pytest

from tests.compat import dagbag_module
from tests.conftest import EXAMPLE_DAGS

DAG_ID = "example_polyai_outbound_calls"

# Status and reason of each mapped wait, in the order of the DAG's NUMBERS. The local server picks
# them by each number's last digit.
EXPECTED_OUTCOMES = [
    ("completed", "call ended normally"),
    ("completed", "customer confirmed the appointment"),
    ("no-answer", "no answer after 30 seconds"),
    ("busy", "destination busy"),
    ("failed", "carrier rejected the call"),
]


@pytest.mark.polyai_time_scale(20)
def test_example_dag_reports_every_outcome(airflow_db, polyai_connection, tmp_path, monkeypatch):
    monkeypatch.setenv("POLYAI_REPORT_DIR", str(tmp_path))
    DagBag = dagbag_module().DagBag
    from airflow.utils.state import DagRunState

    dagbag = DagBag(dag_folder=str(EXAMPLE_DAGS))
    dag = dagbag.get_dag(DAG_ID)
    assert dag is not None, dagbag.import_errors

    run = dag.test()

    assert run.state == DagRunState.SUCCESS
    report = run.get_task_instance("report").xcom_pull(task_ids="report")
    assert [row["status"] for row in report] == ["completed", "completed", "no-answer", "busy", "failed"]
    assert all(row["call_sid"].startswith("OUT-") for row in report)
    assert len(list(tmp_path.glob("*.csv"))) == 1

    for map_index, (status, reason) in enumerate(EXPECTED_OUTCOMES):
        sensor_ti = run.get_task_instance("wait_for_call", map_index=map_index)
        pulled = {
            key: sensor_ti.xcom_pull(task_ids="wait_for_call", key=key, map_indexes=map_index)
            for key in ("status", "reason", "return_value")
        }
        placed_sid = sensor_ti.xcom_pull(task_ids="place_call", key="call_sid", map_indexes=map_index)
        assert sensor_ti.state == "success", map_index
        assert pulled["status"] == status, map_index
        assert pulled["reason"] == reason, map_index
        assert pulled["return_value"]["call_sid"] == placed_sid, map_index


@pytest.mark.polyai_time_scale(20)
def test_example_dag_reports_failed_wait_in_place(airflow_db, polyai_connection, tmp_path, monkeypatch):
    monkeypatch.setenv("POLYAI_REPORT_DIR", str(tmp_path))
    DagBag = dagbag_module().DagBag
    from airflow.utils.state import DagRunState

    # The busy number's status reads are rejected, so its wait fails and pushes no outcome.
    polyai_connection.state.faults.add_rule({"endpoint": "status", "to_number": "+14155550105", "faults": ["401"] * 20})
    dag = DagBag(dag_folder=str(EXAMPLE_DAGS)).get_dag(DAG_ID)

    run = dag.test()

    # The run's state follows its leaf, the report, which runs after every wait ends either way.
    assert run.state == DagRunState.SUCCESS
    assert run.get_task_instance("wait_for_call", map_index=3).state == "failed"
    report = run.get_task_instance("report").xcom_pull(task_ids="report")
    assert [row["status"] for row in report] == ["completed", "completed", "no-answer", "unknown", "failed"]
    placed = [call.to_number for call in polyai_connection.state.calls.values()]
    assert report[3]["to_number"] == "+14155550105"
    assert report[3]["call_sid"] in polyai_connection.state.calls
    assert polyai_connection.state.calls[report[3]["call_sid"]].to_number == "+14155550105"
    assert sorted(placed) == sorted(row["to_number"] for row in report)
