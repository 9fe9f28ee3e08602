"""Sensor that waits for many outbound calls to reach a terminal status, with one trigger."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from airflow_provider_polyai.exceptions import (
    AirflowFailException,
    PolyAICallNotFoundError,
    PolyAIInvalidInputError,
    PolyAITransientError,
)
from airflow_provider_polyai.models import DEFAULT_API_GENERATION, CallStatus, next_poll_interval
from airflow_provider_polyai.validation import validate_call_sid
from airflow_provider_polyai.version_compat import AirflowSensorTimeout
from airflow_provider_polyai.waiting import (
    DEFERRAL_TIMEOUT_GRACE_SECONDS,
    check_failure_statuses_for,
    deadline_after,
    default_deferrable,
    default_end_from_trigger,
    explain_not_found,
    validate_failure_statuses,
    validate_intervals,
)

if TYPE_CHECKING:
    import datetime

    from airflow.sdk import Context

    from airflow_provider_polyai.hooks.polyai import PolyAIHook

#: XCom key of the number of calls per raw terminal status, for example ``{"completed": 9, "busy": 1}``.
XCOM_COUNTS_KEY = "counts"

#: XCom key of the number of calls per outcome, for example ``{"completed": 9, "failed": 1}``.
XCOM_OUTCOME_COUNTS_KEY = "outcome_counts"

#: Default ``max_concurrency``: the maximum number of status polls in flight in deferrable mode.
DEFAULT_MAX_CONCURRENCY = 32


def validate_call_sids(call_sids: Any) -> list[str]:
    """Return the SIDs as a list without duplicates, in their first order, or raise naming the bad one."""
    if isinstance(call_sids, (str, bytes)) or not isinstance(call_sids, Iterable):
        raise PolyAIInvalidInputError(
            f"call_sids must be a list of call SIDs, got {type(call_sids).__name__} {call_sids!r}. "
            "Pass a list, or the output of a mapped TriggerOutboundCallOperator; for one SID use "
            "OutboundCallStatusSensor."
        )
    checked: dict[str, None] = {}
    for position, call_sid in enumerate(call_sids):
        try:
            checked[validate_call_sid(call_sid)] = None
        except PolyAIInvalidInputError as err:
            raise PolyAIInvalidInputError(f"call_sids[{position}]: {err}") from None
    return list(checked)


class OutboundCallsBatchSensor(BaseSensorOperator):
    """Wait until every call in a list of PolyAI outbound calls reaches a terminal status.

    Each call keeps the schedule of
    :class:`~airflow_provider_polyai.sensors.outbound_call.OutboundCallStatusSensor`: polled every
    ``poke_interval`` seconds while queued or ringing and every ``in_progress_poke_interval``
    seconds once in progress. In the default deferrable mode one
    :class:`~airflow_provider_polyai.triggers.outbound_calls_batch.OutboundCallsBatchTrigger` watches
    all of them with at most ``max_concurrency`` requests in flight, which costs the triggerer far
    less than one trigger per call. ``mode="poke"`` and ``mode="reschedule"`` poll the calls that are
    due, one after another, from a worker; use them for small lists only.

    The return value maps each SID to ``{"status", "reason", "outcome"}``. The XCom key ``counts``
    contains the number of calls per raw terminal status and ``outcome_counts`` the number per
    outcome. All are pushed before the task fails, which it does without retries when any call ends
    in a raw status or outcome of ``failure_statuses``, when PolyAI answers a SID
    with a permanent error (the outcomes known so far are pushed first), or at ``timeout``.

    :param call_sids: SIDs of the calls to wait for (templated), for example
        ``call_sids=place_call.output`` of a mapped :class:`TriggerOutboundCallOperator`.
        Duplicates are watched once.
    :param polyai_conn_id: id of the ``polyai`` connection.
    :param deferrable: wait on the triggerer. Defaults as for ``OutboundCallStatusSensor``.
    :param poke_interval: seconds between polls of a call that is queued or ringing.
    :param in_progress_poke_interval: seconds between polls of a call that is in progress.
    :param failure_statuses: terminal statuses that fail the task, for example ``("failed", "busy")``.
        Outcomes match every API generation, raw statuses only their own, as for
        ``OutboundCallStatusSensor``.
    :param max_concurrency: status requests in flight at most in deferrable mode.
    :param end_from_trigger: when deferred and no call ends in a failure status, end the task from
        the triggerer with the same XComs, so no worker slot is taken after the wait. Defaults to
        ``True`` unless plugins register listeners, which Airflow does not allow with it.
    """

    template_fields: Sequence[str] = ("call_sids",)
    ui_color = "#e7dcfb"

    def __init__(
        self,
        *,
        call_sids: Iterable[str],
        polyai_conn_id: str = "polyai_default",
        deferrable: bool | None = None,
        poke_interval: float = 3.0,
        in_progress_poke_interval: float = 15.0,
        failure_statuses: Iterable[str] = (),
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        end_from_trigger: bool | None = None,
        **kwargs: Any,
    ) -> None:
        validate_intervals(poke_interval, in_progress_poke_interval)
        if not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise PolyAIInvalidInputError(f"max_concurrency must be a positive integer, got {max_concurrency!r}.")
        super().__init__(poke_interval=poke_interval, **kwargs)
        self.call_sids = call_sids
        self.polyai_conn_id = polyai_conn_id
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.in_progress_poke_interval = float(in_progress_poke_interval)
        self.failure_statuses = validate_failure_statuses(failure_statuses)
        self.max_concurrency = max_concurrency
        self.end_from_trigger = default_end_from_trigger() if end_from_trigger is None else end_from_trigger
        # Poke and reschedule modes: state kept between pokes of one worker process.
        self._outcomes: dict[str, dict[str, str]] = {}
        self._last_statuses: dict[str, str | None] = {}
        self._due_at: dict[str, float] = {}
        self._generation: str | None = None
        # Number of ended calls in the last "N of M calls ended" line, so each count is logged once.
        self._ended_count_logged: int | None = None

    def _hook(self) -> PolyAIHook:
        from airflow_provider_polyai.hooks.polyai import PolyAIHook

        return PolyAIHook(polyai_conn_id=self.polyai_conn_id)

    def execute(self, context: Context) -> Any:
        self.call_sids = validate_call_sids(self.call_sids)
        if not self.call_sids:
            self.log.info("No call SIDs to wait for.")
            return self._finish(context, {})
        if not self.deferrable:
            return super().execute(context)

        from airflow_provider_polyai.triggers.outbound_calls_batch import OutboundCallsBatchTrigger

        self.log.info(
            "Deferring until %d calls end (timeout %.0f s, %d polls in flight at most).",
            len(self.call_sids),
            self.timeout,
            self.max_concurrency,
        )
        self.defer(
            trigger=OutboundCallsBatchTrigger(
                call_sids=self.call_sids,
                polyai_conn_id=self.polyai_conn_id,
                poke_interval=self.poke_interval,
                in_progress_poke_interval=self.in_progress_poke_interval,
                deadline=deadline_after(self.timeout),
                max_concurrency=self.max_concurrency,
                end_from_trigger=self.end_from_trigger,
                failure_statuses=sorted(self.failure_statuses),
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout + DEFERRAL_TIMEOUT_GRACE_SECONDS),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, dict[str, str]]:
        """Push the outcomes the trigger reported, then finish or fail the task."""
        if not isinstance(event, dict):
            raise AirflowFailException(f"The trigger returned no usable event ({event!r}); the outcomes are unknown.")
        generation = event.get("generation")
        outcomes = _with_outcomes(event.get("outcomes") or {}, generation)
        kind = event.get("event")
        if kind == "terminal":
            return self._finish(context, outcomes, generation)
        self._push(context, outcomes)
        pending = event.get("pending") or {}
        message = event.get("message") or f"Waiting for {len(pending)} calls failed."
        if kind == "timeout":
            raise AirflowSensorTimeout(f"{message} Still waiting: {_describe_pending(pending)}.")
        raise AirflowFailException(message)

    def poke(self, context: Context) -> bool | PokeReturnValue:
        from airflow_provider_polyai.triggers.outbound_calls_batch import outcome_entry

        self.call_sids = validate_call_sids(self.call_sids)
        hook = self._hook()
        now = time.monotonic()
        for call_sid in self.call_sids:
            if call_sid in self._outcomes or self._due_at.get(call_sid, 0.0) > now:
                continue
            try:
                status = hook.get_call_status(call_sid)
            except PolyAITransientError as err:
                # The hook has already retried. Without a due time the call would be polled again at
                # once, so it waits poke_interval like a call that is still queued.
                self._due_at[call_sid] = time.monotonic() + self.poke_interval
                self.log.warning(
                    "Call %s: status poll failed, next poll in %.1f s: %s", call_sid, self.poke_interval, err
                )
                continue
            except PolyAICallNotFoundError as err:
                self._push(context, self._outcomes)
                raise AirflowFailException(
                    explain_not_found(call_sid, self._last_statuses.get(call_sid), err)
                ) from err
            self._generation = status.generation
            if status.status != self._last_statuses.get(call_sid):
                self.log.info("Call %s: %s -> %s", call_sid, self._last_statuses.get(call_sid), status.status)
                self._last_statuses[call_sid] = status.status
            if status.is_terminal:
                self._outcomes[call_sid] = outcome_entry(status)
                continue
            interval = next_poll_interval(status.status, self.poke_interval, self.in_progress_poke_interval)
            self._due_at[call_sid] = time.monotonic() + interval

        if len(self._outcomes) != self._ended_count_logged:
            self.log.info("%d of %d calls ended.", len(self._outcomes), len(self.call_sids))
            self._ended_count_logged = len(self._outcomes)
        if len(self._outcomes) < len(self.call_sids):
            return False
        return PokeReturnValue(is_done=True, xcom_value=self._finish(context, self._outcomes, self._generation))

    def _get_next_poke_interval(
        self,
        started_at: datetime.datetime | float,
        run_duration: Callable[[], float],
        poke_count: int,
    ) -> float:
        """Wait until the next call is due, never past the timeout."""
        if self.exponential_backoff:
            interval = super()._get_next_poke_interval(started_at, run_duration, poke_count)
        else:
            pending_due = [due for sid, due in self._due_at.items() if sid not in self._outcomes]
            interval = min(pending_due, default=time.monotonic() + self.poke_interval) - time.monotonic()
        return max(0.0, min(interval, self.timeout - run_duration()))

    def _push(self, context: Context, outcomes: dict[str, dict[str, str]]) -> dict[str, int]:
        from airflow_provider_polyai.triggers.outbound_calls_batch import count_outcomes, count_statuses

        counts = count_statuses(outcomes)
        ti = context["ti"]
        ti.xcom_push(key="return_value", value=dict(outcomes))
        ti.xcom_push(key=XCOM_COUNTS_KEY, value=counts)
        ti.xcom_push(key=XCOM_OUTCOME_COUNTS_KEY, value=count_outcomes(outcomes))
        return counts

    def _finish(
        self, context: Context, outcomes: dict[str, dict[str, str]], generation: str | None = None
    ) -> dict[str, dict[str, str]]:
        """Push the outcomes and counts, then fail the task if any call ended in a failure status.

        ``generation`` is the API generation that reported the statuses, ``None`` when no status
        was read. A raw status in ``failure_statuses`` that it never reports fails the task, as with
        the single-call sensor, because it could never match.
        """
        from airflow_provider_polyai.triggers.outbound_calls_batch import failed_call_sids

        counts = self._push(context, outcomes)
        self.log.info("All %d calls ended: %s", len(outcomes), counts or "no calls")
        if self.failure_statuses and generation is not None and outcomes:
            check_failure_statuses_for(self.failure_statuses, generation, min(outcomes))
        failed = failed_call_sids(outcomes, self.failure_statuses)
        if failed:
            shown = ", ".join(f"{sid} ({outcomes[sid]['status']})" for sid in failed[:5])
            more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
            raise AirflowFailException(
                f"{len(failed)} of {len(outcomes)} calls ended in a status this task treats as a failure: "
                f"{shown}{more}."
            )
        return outcomes


def _with_outcomes(outcomes: dict[str, dict[str, str]], generation: str | None) -> dict[str, dict[str, str]]:
    """Return the trigger's SID mapping with ``outcome`` in every entry.

    A trigger serialized before entries carried ``outcome`` sends entries without it, which are
    completed here from the raw status and the event's generation.
    """
    completed = {}
    for call_sid, entry in outcomes.items():
        if "outcome" not in entry:
            status = CallStatus(call_sid, entry["status"], generation=generation or DEFAULT_API_GENERATION)
            entry = {**entry, "outcome": status.outcome}
        completed[call_sid] = entry
    return completed


def _describe_pending(pending: dict[str, str | None]) -> str:
    shown = ", ".join(f"{sid} ({status or 'not read'})" for sid, status in list(pending.items())[:5])
    more = f" and {len(pending) - 5} more" if len(pending) > 5 else ""
    return f"{shown}{more}" if shown else "none"
