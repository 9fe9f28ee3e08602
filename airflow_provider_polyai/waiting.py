"""Waiting for a call's outcome: the parts the sensor and the call operator share."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from airflow_provider_polyai.exceptions import AirflowFailException, PolyAIError, PolyAIInvalidInputError
from airflow_provider_polyai.models import TERMINAL_STATUSES, CallStatus

if TYPE_CHECKING:
    from airflow.sdk import Context

try:
    from airflow.sdk.exceptions import AirflowSensorTimeout
except ImportError:  # Airflow 3.0
    from airflow.exceptions import AirflowSensorTimeout  # type: ignore[no-redef]

#: XCom keys pushed besides the return value.
XCOM_STATUS_KEY = "status"
XCOM_REASON_KEY = "reason"
XCOM_CALL_SID_KEY = "call_sid"

#: Extra seconds Airflow's own deferral timeout waits past the trigger's deadline, so the trigger's
#: timeout event, which carries the last status seen, normally arrives first.
DEFERRAL_TIMEOUT_GRACE_SECONDS = 60.0


def default_deferrable() -> bool:
    """Return the ``deferrable`` default: ``True`` unless the deployment chose otherwise.

    Airflow ships ``[operators] default_deferrable = false`` and writes that line into every
    ``airflow.cfg`` it generates, so a ``false`` read from the file cannot be told apart from the
    shipped default. Following it would make every wait hold a worker slot. The option is therefore
    followed when it is set through ``AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE`` (true or false) or is
    ``true`` in ``airflow.cfg``; otherwise the default is ``True``.
    """
    from airflow.sdk.configuration import conf

    if "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE" in os.environ:
        return conf.getboolean("operators", "default_deferrable", fallback=True)
    return True


def validate_failure_statuses(failure_statuses: Iterable[str] | str) -> frozenset[str]:
    """Return ``failure_statuses`` as a set, or raise if one of them is not a terminal status."""
    if isinstance(failure_statuses, str):
        failure_statuses = (failure_statuses,)
    statuses = frozenset(failure_statuses)
    unknown = sorted(statuses - TERMINAL_STATUSES)
    if unknown:
        raise PolyAIInvalidInputError(
            f"failure_statuses contains {unknown}, which are not terminal statuses; "
            f"choose from {sorted(TERMINAL_STATUSES)}."
        )
    return statuses


def validate_intervals(poke_interval: float, in_progress_poke_interval: float) -> None:
    """Raise if a poll interval is not a positive number of seconds."""
    for name, value in (("poke_interval", poke_interval), ("in_progress_poke_interval", in_progress_poke_interval)):
        if not isinstance(value, (int, float)) or value <= 0:
            raise PolyAIInvalidInputError(f"{name} must be a positive number of seconds, got {value!r}.")


def deadline_after(timeout_seconds: float) -> float:
    """Return the UNIX time ``timeout_seconds`` from now: the absolute end of a wait."""
    return time.time() + timeout_seconds


def push_outcome(context: Context, status: CallStatus) -> None:
    """Push a call's final status and reason to XCom under their own keys."""
    ti = context["ti"]
    ti.xcom_push(key=XCOM_STATUS_KEY, value=status.status)
    ti.xcom_push(key=XCOM_REASON_KEY, value=status.reason)


def raise_if_failure(status: CallStatus, failure_statuses: frozenset[str]) -> None:
    """Fail the task, without retries, when the terminal status is one the user treats as failure."""
    if status.status in failure_statuses:
        raise AirflowFailException(
            f"Call {status.call_sid} ended with status {status.status!r} "
            f"({status.reason or 'no reason given'}), which this task treats as a failure."
        )


def status_from_event(event: dict[str, Any] | None) -> CallStatus:
    """Return the terminal status in a trigger event, or raise the error or timeout it reports."""
    if not event:
        raise PolyAIError("The trigger returned no event; the call's outcome is unknown.")
    kind = event.get("event")
    if kind == "terminal":
        return CallStatus(call_sid=event["call_sid"], status=event["status"], reason=event.get("reason") or "")
    if kind == "timeout":
        raise AirflowSensorTimeout(event.get("message") or f"Timed out waiting for call {event.get('call_sid')}.")
    raise AirflowFailException(event.get("message") or f"Waiting for call {event.get('call_sid')} failed.")


def explain_not_found(call_sid: str, last_status: str | None, err: PolyAIError) -> str:
    """Return the message for a 404, which means something else once the call had been seen."""
    if last_status is None:
        return str(err)
    return (
        f"Call {call_sid} was found before (last status {last_status!r}) but PolyAI now answers HTTP 404: "
        "its status data has expired or the connection now uses a different connector token. "
        f"Details: {err}"
    )
