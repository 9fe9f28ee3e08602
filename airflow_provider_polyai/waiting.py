"""Waiting for a call's outcome: the parts the sensor and the call operator share."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from airflow_provider_polyai.exceptions import AirflowFailException, PolyAIError, PolyAIInvalidInputError
from airflow_provider_polyai.models import (
    ALL_FAILURE_STATUS_CHOICES,
    DEFAULT_API_GENERATION,
    TERMINAL_OUTCOMES,
    VOCABULARIES,
    CallStatus,
)
from airflow_provider_polyai.version_compat import AirflowSensorTimeout, airflow_conf

if TYPE_CHECKING:
    from airflow.sdk import Context

#: XCom keys pushed besides the return value.
XCOM_STATUS_KEY = "status"
XCOM_REASON_KEY = "reason"
XCOM_CALL_SID_KEY = "call_sid"
XCOM_OUTCOME_KEY = "outcome"

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
    if "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE" in os.environ:
        return airflow_conf().getboolean("operators", "default_deferrable", fallback=True)
    return True


def default_end_from_trigger() -> bool:
    """Return the ``end_from_trigger`` default: ``True`` unless plugins register listeners.

    Airflow 3.3 refuses to load a DAG whose task has ``end_from_trigger=True`` while a plugin
    registers listeners (OpenLineage does), because a task ended by the triggerer skips them. Such a
    deployment gets ``False``: the task resumes on a worker for a moment to finish.
    """
    try:
        from airflow.listeners.listener import get_listener_manager
    except ImportError:  # only the Task SDK is installed: no listeners can be registered
        return True
    return not get_listener_manager().has_listeners


def validate_failure_statuses(failure_statuses: Iterable[str] | str) -> frozenset[str]:
    """Return ``failure_statuses`` as a set, or raise if one of them is not a terminal status.

    An entry is a terminal outcome (``completed``, ``failed``, ``no-answer``, ``busy``,
    ``cancelled``), which works with every API generation, or a raw terminal status of any
    generation (``success``, ``FAILURE``, ...). The generation is only known once the connection is
    read, so :func:`check_failure_statuses_for` checks the raw ones again when the call ends.
    """
    if isinstance(failure_statuses, str):
        failure_statuses = (failure_statuses,)
    statuses = frozenset(failure_statuses)
    unknown = sorted(statuses - ALL_FAILURE_STATUS_CHOICES)
    if unknown:
        raise PolyAIInvalidInputError(
            f"failure_statuses contains {unknown}, which are not terminal statuses; "
            f"choose from {sorted(ALL_FAILURE_STATUS_CHOICES)}."
        )
    return statuses


def foreign_failure_statuses(failure_statuses: Iterable[str], generation: str) -> list[str]:
    """Return the entries of ``failure_statuses`` that are raw statuses ``generation`` never reports."""
    if not failure_statuses:
        return []
    return sorted(set(failure_statuses) - TERMINAL_OUTCOMES - VOCABULARIES[generation].terminal)


def check_failure_statuses_for(failure_statuses: Iterable[str], generation: str, call_sid: str) -> None:
    """Raise if ``failure_statuses`` has a raw status that ``generation`` never reports.

    Such an entry could never match, so a failed call would pass as a success without it.
    """
    terminal = VOCABULARIES[generation].terminal
    foreign = foreign_failure_statuses(failure_statuses, generation)
    if foreign:
        raise PolyAIInvalidInputError(
            f"failure_statuses contains {foreign}, which API generation {generation!r} never reports, so "
            f"they cannot match call {call_sid}. Use outcomes, which every generation reports "
            f"({', '.join(sorted(TERMINAL_OUTCOMES))}), or this generation's raw statuses "
            f"({', '.join(sorted(terminal))})."
        )


def validate_intervals(poke_interval: float, in_progress_poke_interval: float) -> None:
    """Raise if a poll interval is not a positive number of seconds."""
    for name, value in (("poke_interval", poke_interval), ("in_progress_poke_interval", in_progress_poke_interval)):
        if not isinstance(value, (int, float)) or value <= 0:
            raise PolyAIInvalidInputError(f"{name} must be a positive number of seconds, got {value!r}.")


def deadline_after(timeout_seconds: float) -> float:
    """Return the UNIX time ``timeout_seconds`` from now: the absolute end of a wait."""
    return time.time() + timeout_seconds


def push_outcome(context: Context, status: CallStatus) -> None:
    """Push a call's final status, reason and outcome to XCom under their own keys."""
    ti = context["ti"]
    ti.xcom_push(key=XCOM_STATUS_KEY, value=status.status)
    ti.xcom_push(key=XCOM_REASON_KEY, value=status.reason)
    ti.xcom_push(key=XCOM_OUTCOME_KEY, value=status.outcome)


def raise_if_failure(status: CallStatus, failure_statuses: frozenset[str]) -> None:
    """Fail the task, without retries, when the terminal status or its outcome is one the user treats as failure.

    Also fails it when ``failure_statuses`` names a raw status of another API generation than the
    one that reported ``status``; see :func:`check_failure_statuses_for`.
    """
    if failure_statuses:
        check_failure_statuses_for(failure_statuses, status.generation, status.call_sid)
    if status.matches(failure_statuses):
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
        # Events from triggers serialized before generations existed have no "generation" key.
        return CallStatus(
            call_sid=event["call_sid"],
            status=event["status"],
            reason=event.get("reason") or "",
            generation=event.get("generation") or DEFAULT_API_GENERATION,
        )
    if kind == "timeout":
        raise AirflowSensorTimeout(event.get("message") or f"Timed out waiting for call {event.get('call_sid')}.")
    raise AirflowFailException(event.get("message") or f"Waiting for call {event.get('call_sid')} failed.")


def explain_not_found(call_sid: str, last_status: str | None, err: PolyAIError) -> str:
    """Return the message for a 404, which means something else once the call had been seen."""
    if last_status is None:
        return str(err)
    return (
        f"Call {call_sid} was found before (last status {last_status!r}) but PolyAI now answers HTTP 404: "
        "its status data has expired or the connection now uses a different connector token. PolyAI keeps "
        "status data 30 days after the call ends, or about 2 hours with the v1 and agents API generations. "
        f"Details: {err}"
    )
