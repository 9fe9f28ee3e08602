"""Place a few outbound calls, wait for each without a worker slot, and report their outcomes.

Run against the local PolyAI server, the numbers below end in digits that choose their outcome:
0 and 8 complete, 4 is not answered, 5 is busy and 6 fails. Against PolyAI itself, replace them with
numbers you are allowed to call.

The DAG works unchanged with every PolyAI API generation: the ``polyai_default`` connection's
``api_generation`` extra picks one. The report shows each call's raw status and its outcome, which
reads the same in every generation (the v1 and agents generations report busy and unanswered calls
as ``failed``).
"""

from __future__ import annotations

import csv
import os
from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG, task

from airflow_provider_polyai.operators.outbound_call import TriggerOutboundCallOperator
from airflow_provider_polyai.sensors.outbound_call import OutboundCallStatusSensor

NUMBERS = [
    "+14155550100",
    "+442071838758",
    "+14155550104",
    "+14155550105",
    "+14155550106",
]

with DAG(
    dag_id="example_polyai_outbound_calls",
    description="Place PolyAI outbound calls, wait for them, report status and reason.",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["example", "polyai"],
) as dag:
    place_call = TriggerOutboundCallOperator.partial(
        task_id="place_call",
        metadata={"campaign": "appointment-reminder", "run_id": "{{ run_id }}"},
    ).expand(to_number=NUMBERS)

    wait_for_call = OutboundCallStatusSensor.partial(
        task_id="wait_for_call",
        deferrable=True,
        poke_interval=3,
        in_progress_poke_interval=15,
        timeout=timedelta(minutes=30),
    ).expand(call_sid=place_call.output)

    @task(trigger_rule="all_done")
    def report(numbers: list[str], run_id: str | None = None, ti=None) -> list[dict]:
        """Write one row per call (number, SID, status, reason) to a CSV file and the task log."""
        rows = []
        for map_index, number in enumerate(numbers):
            # Pulled per map index: a wait that failed before any outcome (a revoked token, a
            # timeout) pushed nothing, and the row must still pair this number with its own SID.
            outcome = ti.xcom_pull(task_ids="wait_for_call", map_indexes=map_index)
            if not outcome:
                call_sid = ti.xcom_pull(task_ids="place_call", map_indexes=map_index) or ""
                outcome = {
                    "call_sid": call_sid,
                    "status": "unknown",
                    "reason": "no outcome recorded",
                    "outcome": "unknown",
                }
            rows.append({"to_number": number, **outcome})
        report_dir = Path(os.environ.get("POLYAI_REPORT_DIR", "polyai_reports"))
        report_dir.mkdir(parents=True, exist_ok=True)
        path = report_dir / f"{(run_id or 'manual').replace(':', '_').replace('+', '_')}.csv"
        with path.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=["call_sid", "to_number", "status", "reason", "outcome"])
            writer.writeheader()
            writer.writerows(rows)

        header = f"{'CALL SID':<42} {'NUMBER':<15} {'STATUS':<11} {'OUTCOME':<11} REASON"
        lines = [header] + [
            f"{row['call_sid']:<42} {row['to_number']:<15} {row['status']:<11} {row.get('outcome', ''):<11} "
            f"{row['reason']}"
            for row in rows
        ]
        print("\n".join(lines))
        print(f"Report written to {path}")
        return rows

    wait_for_call >> report(NUMBERS)
