"""The campaign example DAG at 200 calls on a real scheduler and triggerer, then cleared in part.

Some numbers fail before PolyAI accepts their call: five HTTP 429s use up the hook's attempts, so
Airflow retries the task. Others are accepted by the server while the client times out, so the
outcome is unknown and the task fails without retries. The run is then cleared for a sample of
contacts. Through all of it, the local server must see exactly one call per contact.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE_DAGS
from tests.e2e.cluster import AirflowCluster, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DAG_ID = "example_polyai_campaign"
POOL = "polyai_calls"
# Fewer pool slots than task processes, so the pool, not parallelism, is what paces the dialling.
POOL_SLOTS = 4
PARALLELISM = 8
CONTACTS_CSV = EXAMPLE_DAGS / "data" / "campaign_contacts.csv"
CONTACTS = 200

# Map indexes (rows of the contacts file) that get trigger faults.
REJECTED_FIRST = (3, 150)
ACCEPTED_UNANSWERED = (7, 120)
# Map indexes cleared after the run, besides the faulty ones above.
CLEARED_SAMPLE = (0, 1, 50, 199)


@pytest.fixture(scope="module")
def campaign_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowCluster]:
    """A deployment of its own, because the campaign's pacing is read from the environment at parse time.

    The server runs ten times faster than real time.
    """
    cluster = AirflowCluster(
        tmp_path_factory.mktemp("airflow-campaign"),
        dag_files=[EXAMPLE_DAGS / "example_polyai_campaign.py"],
        parallelism=PARALLELISM,
        time_scale=10,
        extra_env={
            "POLYAI_CAMPAIGN_POOL": POOL,
            "POLYAI_CAMPAIGN_RETRY_DELAY_SECONDS": "1",
        },
    )
    cluster.start()
    try:
        cluster.api("POST", "/api/v2/pools", json={"name": POOL, "slots": POOL_SLOTS, "include_deferred": False})
        yield cluster
    except BaseException:
        print(cluster.describe_logs())
        raise
    finally:
        cluster.stop()


def read_contacts() -> list[dict[str, str]]:
    with CONTACTS_CSV.open() as file:
        return list(csv.DictReader(file))[:CONTACTS]


def read_report(report_dir: Path) -> list[dict[str, str]]:
    (calls_csv,) = report_dir.glob("*/calls.csv")
    with calls_csv.open() as file:
        return list(csv.DictReader(file))


def max_running_at_once(cluster: AirflowCluster, run_id: str, task_id: str) -> int:
    """Return the most instances of ``task_id`` whose start-to-end intervals overlapped."""
    edges = []
    for ti in cluster.task_instances(DAG_ID, run_id):
        if ti["task_id"] == task_id and ti["start_date"] and ti["end_date"]:
            edges.append((ti["start_date"], 1))
            edges.append((ti["end_date"], -1))
    running = most = 0
    # ISO 8601 UTC timestamps sort in time order; an end sorts before a start at the same instant.
    for _, step in sorted(edges):
        running += step
        most = max(most, running)
    return most


def open_window_now() -> dict:
    """Return a calling window open in UTC from an hour ago to two hours from now."""
    now = datetime.now(timezone.utc)
    return {
        "start": (now - timedelta(hours=1)).strftime("%H:%M"),
        "end": (now + timedelta(hours=2)).strftime("%H:%M"),
        "weekdays": "mon-sun",
    }


def test_campaign_200_calls_each_dialled_once(campaign_cluster: AirflowCluster, tmp_path: Path) -> None:
    cluster = campaign_cluster
    contacts = read_contacts()
    numbers = [contact["to_number"] for contact in contacts]
    for index in REJECTED_FIRST:
        cluster.polyai("POST", "faults", {"endpoint": "trigger", "to_number": numbers[index], "faults": ["429:0"] * 5})
    for index in ACCEPTED_UNANSWERED:
        # Longer than the hook's 10 s read timeout; the server places the call all the same.
        cluster.polyai("POST", "faults", {"endpoint": "trigger", "to_number": numbers[index], "faults": ["slow:12"]})
    cluster.wait_for_dag(DAG_ID)
    report_dir = tmp_path / "reports"
    conf = {
        "contacts_csv": str(CONTACTS_CSV),
        "max_contacts": CONTACTS,
        # Every contact's window is checked in UTC here, so the whole list is callable now.
        "time_zone": "UTC",
        "calling_window": open_window_now(),
        "report_dir": str(report_dir),
    }

    run_id = cluster.trigger(DAG_ID, conf=conf)

    assert cluster.wait_for_run(DAG_ID, run_id, timeout=600) == "success"
    calls = Counter(call["to_number"] for call in cluster.polyai("GET", "calls"))
    assert calls == Counter(numbers)
    rows = read_report(report_dir)
    assert len(rows) == CONTACTS
    by_status = Counter(row["status"] for row in rows)
    assert by_status["place-failed"] == len(ACCEPTED_UNANSWERED)
    assert sum(by_status[status] for status in ("completed", "no-answer", "busy", "failed", "cancelled")) == (
        CONTACTS - len(ACCEPTED_UNANSWERED)
    )
    for index in REJECTED_FIRST:
        assert cluster.task_instance(DAG_ID, run_id, "place_call", index)["try_number"] == 2
    first_sids = {row["to_number"]: row["call_sid"] for row in rows}
    assert max_running_at_once(cluster, run_id, "place_call") <= POOL_SLOTS

    cleared = sorted({*REJECTED_FIRST, *ACCEPTED_UNANSWERED, *CLEARED_SAMPLE})
    body = {
        "dry_run": False,
        "dag_run_id": run_id,
        "task_ids": [["place_call", index] for index in cleared] + ["wait_for_calls", "report"],
        "only_failed": False,
        "reset_dag_runs": True,
    }
    cluster.api("POST", f"/api/v2/dags/{DAG_ID}/clearTaskInstances", json=body)
    wait_until(
        lambda: cluster.task_instance(DAG_ID, run_id, "report")["try_number"] >= 2,
        timeout=120,
        what="the cleared report task to start again",
    )

    assert cluster.wait_for_run(DAG_ID, run_id, timeout=240) == "success"
    assert Counter(call["to_number"] for call in cluster.polyai("GET", "calls")) == Counter(numbers)
    rerun_rows = read_report(report_dir)
    assert {row["to_number"]: row["call_sid"] for row in rerun_rows} == first_sids
    for index in ACCEPTED_UNANSWERED:
        assert cluster.task_instance(DAG_ID, run_id, "place_call", index)["state"] == "failed"
