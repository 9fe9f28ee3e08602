"""The campaign example DAG, run with dag.test() on a real metadata database against the local server."""

from __future__ import annotations

import csv
import json
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from tests.compat import dagbag_module, requires_task_state_store
from tests.conftest import EXAMPLE_DAGS

DAG_ID = "example_polyai_campaign"

# Last digits pick the local server's outcome: 0 completes, 4 is not answered, 5 busy, 6 failed.
NUMBERS = ["+442079460100", "+442079460104", "+442079460105", "+442079460106", "+14155550110", "+14155550120"]


def write_contacts(path: Path, numbers: list[str]) -> Path:
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["contact_id", "name", "to_number", "time_zone"])
        writer.writeheader()
        for index, number in enumerate(numbers):
            writer.writerow({"contact_id": f"T{index}", "name": f"Test {index}", "to_number": number, "time_zone": ""})
    return path


def campaign_dag():
    DagBag = dagbag_module().DagBag

    dagbag = DagBag(dag_folder=str(EXAMPLE_DAGS / "example_polyai_campaign.py"))
    dag = dagbag.get_dag(DAG_ID)
    assert dag is not None, dagbag.import_errors
    return dag


def server_calls(server) -> list[dict]:
    with urllib.request.urlopen(f"{server.base_url}/_local/calls", timeout=10) as response:
        return json.load(response)


def read_report(report_dir: Path) -> list[dict]:
    (calls_csv,) = report_dir.glob("*/calls.csv")
    with calls_csv.open() as file:
        return list(csv.DictReader(file))


@pytest.mark.polyai_time_scale(20)
def test_campaign_reports_every_contact(airflow_db, polyai_connection, tmp_path):
    from airflow.utils.state import DagRunState

    contacts = write_contacts(tmp_path / "contacts.csv", NUMBERS)
    conf = {"contacts_csv": str(contacts), "calling_window": None, "report_dir": str(tmp_path / "reports")}

    run = campaign_dag().test(run_conf=conf)

    assert run.state == DagRunState.SUCCESS
    rows = read_report(tmp_path / "reports")
    assert [row["to_number"] for row in rows] == NUMBERS
    assert [row["status"] for row in rows] == ["completed", "no-answer", "busy", "failed", "completed", "completed"]
    assert all(row["call_sid"].startswith("OUT-") for row in rows)
    assert sorted(call["to_number"] for call in server_calls(polyai_connection)) == sorted(NUMBERS)
    summary = (next((tmp_path / "reports").glob("*/summary.txt"))).read_text()
    assert "completed         3   50.0%" in summary


@requires_task_state_store
@pytest.mark.polyai_time_scale(20)
def test_campaign_retry_never_dials_twice(airflow_db, polyai_server, tmp_path, monkeypatch):
    from airflow.utils.state import DagRunState, TaskInstanceState

    monkeypatch.setenv("POLYAI_CAMPAIGN_RETRY_DELAY_SECONDS", "0")
    # A 1-second read timeout turns a slow answer into an unknown outcome quickly.
    connection = {"conn_type": "polyai", "host": polyai_server.base_url, "password": polyai_server.token}
    monkeypatch.setenv("AIRFLOW_CONN_POLYAI_DEFAULT", json.dumps({**connection, "extra": {"timeout": 1}}))
    rejected = NUMBERS[:2]
    accepted_unanswered = NUMBERS[2]
    for number in rejected:
        # Five 429s use up the hook's attempts, so the first try fails before PolyAI accepts the call.
        polyai_server.state.faults.add_rule({"endpoint": "trigger", "to_number": number, "faults": ["429:0"] * 5})
    # The server places this call but answers after the client gave up: the outcome is unknown.
    polyai_server.state.faults.add_rule({"endpoint": "trigger", "to_number": accepted_unanswered, "faults": ["slow:3"]})
    contacts = write_contacts(tmp_path / "contacts.csv", NUMBERS)
    conf = {"contacts_csv": str(contacts), "calling_window": None, "report_dir": str(tmp_path / "reports")}

    run = campaign_dag().test(run_conf=conf)

    assert run.state == DagRunState.SUCCESS
    calls = Counter(call["to_number"] for call in server_calls(polyai_server))
    assert calls == Counter(NUMBERS)
    retried = run.get_task_instance("place_call", map_index=0)
    assert retried.try_number == 2
    assert retried.state == TaskInstanceState.SUCCESS
    unanswered = run.get_task_instance("place_call", map_index=2)
    assert unanswered.state == TaskInstanceState.FAILED
    assert unanswered.try_number == 1
    statuses = {row["to_number"]: row["status"] for row in read_report(tmp_path / "reports")}
    assert statuses[rejected[0]] == "completed"
    assert statuses[accepted_unanswered] == "place-failed"


def test_rate_limit_delays_dial_without_redial(polyai_connection):
    from airflow_provider_polyai.operators.outbound_call import TriggerOutboundCallOperator
    from tests.test_calling_window import make_context

    number = NUMBERS[0]
    polyai_connection.state.faults.add_rule({"endpoint": "trigger", "to_number": number, "faults": ["429:1"]})
    operator = TriggerOutboundCallOperator(task_id="call", to_number=number)

    call_sid = operator.execute(make_context())

    posts = [entry for entry in polyai_connection.state.requests if entry["method"] == "POST"]
    assert [entry.get("fault") for entry in posts] == ["429:1", None]
    assert posts[1]["time"] - posts[0]["time"] >= 1.0
    assert [call["call_sid"] for call in server_calls(polyai_connection)] == [call_sid]
