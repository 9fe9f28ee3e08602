"""A call operator whose wait is ended by Airflow's deferral timeout rather than by its trigger.

The operator asks Airflow for a deferral timeout a grace period longer than ``wait_timeout``, so its
trigger's own timeout event normally comes first. The subclass below sets that grace period to
zero, so the test can stop every triggerer and see the scheduler end the wait after
``wait_timeout`` seconds instead of a minute later.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_polyai.operators.outbound_call import TriggerOutboundCallOperator

DEFERRAL_TIMEOUT_NUMBER = "+14155550161"
#: ``wait_timeout`` of the operator, in seconds.
WAIT_TIMEOUT_SECONDS = 5



class NoGraceCallOperator(TriggerOutboundCallOperator):
    """The call operator with Airflow's deferral timeout equal to ``wait_timeout``."""

    deferral_timeout_grace_seconds = 0.0


with DAG(
    dag_id="polyai_e2e_deferral_timeout",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["polyai-e2e"],
):
    # retries=1 so the test checks that a wait that timed out is final, as the trigger's own
    # timeout event is.
    NoGraceCallOperator(
        task_id="place_call",
        to_number=DEFERRAL_TIMEOUT_NUMBER,
        wait_for_completion=True,
        deferrable=True,
        poke_interval=1,
        in_progress_poke_interval=2,
        wait_timeout=WAIT_TIMEOUT_SECONDS,
        retries=1,
        retry_delay=timedelta(seconds=1),
    )
