"""The example DAG, run with dag.test() on a real metadata database against the local server."""

from __future__ import annotations

import pytest

from tests.conftest import EXAMPLE_DAGS

DAG_ID = "example_polyai_outbound_calls"


@pytest.mark.polyai_time_scale(20)
def test_example_dag_reports_every_outcome(airflow_db, polyai_connection, tmp_path, monkeypatch):
    monkeypatch.setenv("POLYAI_REPORT_DIR", str(tmp_path))
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.1
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]
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
