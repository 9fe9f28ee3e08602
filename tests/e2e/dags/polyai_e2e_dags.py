"""DAGs that the end-to-end tests run on a real scheduler and triggerer.

Each DAG calls its own numbers, so a test can script those calls on the local PolyAI server (through
``/_local/scenarios``) and count them afterwards without seeing another test's calls. The numbers are
exported as module constants for the tests.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_polyai.operators.outbound_call import TriggerOutboundCallOperator
from airflow_provider_polyai.sensors.outbound_call import OutboundCallStatusSensor

RESTART_NUMBER = "+14155550121"
DEADLINE_NUMBER = "+14155550122"
SLOTS_NUMBER = "+14155550123"
HA_NUMBERS = ["+14155550131", "+14155550132", "+14155550133", "+14155550134"]
RETRY_NUMBER = "+14155550141"
CLEAR_NUMBER = "+14155550151"
RETRY_DEADLINE_NUMBER = "+14155550142"

#: Sensor timeout of the deadline DAG, in seconds; the test waits it out with the triggerer down.
DEADLINE_TIMEOUT_SECONDS = 20
#: Sensor timeout of the restart DAG, in seconds.
RESTART_TIMEOUT_SECONDS = 150
#: ``execution_timeout`` of the retry DAG's first try, in seconds.
RETRY_EXECUTION_TIMEOUT_SECONDS = 6
#: Delay before the retry DAG's second try, in seconds.
RETRY_DELAY_SECONDS = 5
#: ``wait_timeout`` of the retry-deadline DAG: over before its second try starts.
RETRY_WAIT_TIMEOUT_SECONDS = RETRY_EXECUTION_TIMEOUT_SECONDS + RETRY_DELAY_SECONDS - 2

COMMON = {"schedule": None, "start_date": datetime(2026, 1, 1), "catchup": False, "tags": ["polyai-e2e"]}


def _place_and_wait(
    dag_id: str, number: str, timeout: float, retries: int = 0, deferrable: bool | None = True
) -> DAG:
    with DAG(dag_id=dag_id, **COMMON) as dag:
        place_call = TriggerOutboundCallOperator(task_id="place_call", to_number=number)
        OutboundCallStatusSensor(
            task_id="wait_for_call",
            call_sid=place_call.output,
            deferrable=deferrable,
            poke_interval=1,
            in_progress_poke_interval=2,
            timeout=timeout,
            retries=retries,
            retry_delay=timedelta(seconds=1),
        )
    return dag


restart_dag = _place_and_wait("polyai_e2e_restart", RESTART_NUMBER, RESTART_TIMEOUT_SECONDS)

# retries=1 so the test also checks that a sensor timeout is final and not retried.
deadline_dag = _place_and_wait("polyai_e2e_deadline", DEADLINE_NUMBER, DEADLINE_TIMEOUT_SECONDS, retries=1)

# deferrable is left to its default, which must be True on a deployment whose generated airflow.cfg
# contains Airflow's own "default_deferrable = False".
slots_dag = _place_and_wait("polyai_e2e_slots", SLOTS_NUMBER, 120, deferrable=None)

with DAG(dag_id="polyai_e2e_ha", **COMMON) as ha_dag:
    ha_calls = TriggerOutboundCallOperator.partial(task_id="place_call").expand(to_number=HA_NUMBERS)
    OutboundCallStatusSensor.partial(
        task_id="wait_for_call",
        deferrable=True,
        poke_interval=1,
        in_progress_poke_interval=2,
        timeout=120,
    ).expand(call_sid=ha_calls.output)

with DAG(dag_id="polyai_e2e_retry", **COMMON) as retry_dag:
    # The first try times out in its worker while the call is still in progress, so the scheduler
    # retries the task after the call has ended.
    TriggerOutboundCallOperator(
        task_id="place_call",
        to_number=RETRY_NUMBER,
        wait_for_completion=True,
        deferrable=False,
        poke_interval=1,
        in_progress_poke_interval=1,
        execution_timeout=timedelta(seconds=RETRY_EXECUTION_TIMEOUT_SECONDS),
        retries=1,
        retry_delay=timedelta(seconds=RETRY_DELAY_SECONDS),
    )

with DAG(dag_id="polyai_e2e_retry_deadline", **COMMON) as retry_deadline_dag:
    # Same first try as above, but the wait_timeout, counted from when the call was placed, is over
    # by the time the scheduler starts the second try.
    TriggerOutboundCallOperator(
        task_id="place_call",
        to_number=RETRY_DEADLINE_NUMBER,
        wait_for_completion=True,
        deferrable=False,
        poke_interval=1,
        in_progress_poke_interval=1,
        wait_timeout=RETRY_WAIT_TIMEOUT_SECONDS,
        execution_timeout=timedelta(seconds=RETRY_EXECUTION_TIMEOUT_SECONDS),
        retries=1,
        retry_delay=timedelta(seconds=RETRY_DELAY_SECONDS),
    )

with DAG(dag_id="polyai_e2e_clear", **COMMON) as clear_dag:
    TriggerOutboundCallOperator(task_id="place_call", to_number=CLEAR_NUMBER)
