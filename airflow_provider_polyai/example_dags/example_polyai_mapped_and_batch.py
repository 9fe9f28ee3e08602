"""Place calls with a mapped operator, then wait for them two ways: one sensor per call, or one for all.

``wait_each`` maps ``OutboundCallStatusSensor`` over the SIDs: one trigger per call, one XCom per
map index. ``wait_all`` gives every SID to ``OutboundCallsBatchSensor``: one trigger polls all the
calls, which is cheaper for the triggerer when there are many. Against the local PolyAI server the
numbers below complete (last digits 0, 1, 8) and are not answered (4).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, task

from airflow_provider_polyai.operators.outbound_call import TriggerOutboundCallOperator
from airflow_provider_polyai.sensors.outbound_call import OutboundCallStatusSensor
from airflow_provider_polyai.sensors.outbound_calls_batch import OutboundCallsBatchSensor

NUMBERS = ["+14155550100", "+14155550101", "+14155550104", "+442071838758"]

with DAG(
    dag_id="example_polyai_mapped_and_batch",
    description="Wait for mapped PolyAI calls with a mapped sensor and with one batch sensor.",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["example", "polyai"],
) as dag:
    place_call = TriggerOutboundCallOperator.partial(task_id="place_call").expand(to_number=NUMBERS)

    wait_each = OutboundCallStatusSensor.partial(
        task_id="wait_each",
        poke_interval=3,
        in_progress_poke_interval=15,
        timeout=timedelta(minutes=30),
    ).expand(call_sid=place_call.output)

    wait_all = OutboundCallsBatchSensor(
        task_id="wait_all",
        call_sids=place_call.output,
        poke_interval=3,
        in_progress_poke_interval=15,
        timeout=timedelta(minutes=30),
    )

    @task
    def summarize(each: list[dict], outcomes: dict[str, dict], ti=None) -> dict[str, int]:
        """Check that both ways saw the same outcomes and return the calls per status."""
        for outcome in each:
            seen_by_batch = outcomes[outcome["call_sid"]]["status"]
            if seen_by_batch != outcome["status"]:
                raise ValueError(
                    f"Call {outcome['call_sid']}: wait_each saw {outcome['status']!r}, wait_all {seen_by_batch!r}."
                )
        counts = ti.xcom_pull(task_ids="wait_all", key="counts")
        print(f"Calls per status: {counts}")
        return counts

    summarize(wait_each.output, wait_all.output)
