"""Trigger that waits for many outbound calls at once, each on its own poll schedule."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_polyai.exceptions import PolyAICallNotFoundError, PolyAIError, PolyAITransientError
from airflow_provider_polyai.models import CallStatus, next_poll_interval
from airflow_provider_polyai.triggers.outbound_call import MAX_ERROR_BACKOFF_SECONDS
from airflow_provider_polyai.waiting import explain_not_found, foreign_failure_statuses

if TYPE_CHECKING:
    from pydantic import JsonValue

    from airflow_provider_polyai.hooks.polyai import PolyAIHook

#: Status polls in flight at once by default; below the hook's pool of 64 connections per base URL.
DEFAULT_MAX_CONCURRENCY = 32


def count_statuses(outcomes: dict[str, dict[str, str]]) -> dict[str, int]:
    """Return how many calls ended in each raw status, for example ``{"completed": 3, "busy": 1}``."""
    return dict(sorted(Counter(outcome["status"] for outcome in outcomes.values()).items()))


def count_outcomes(outcomes: dict[str, dict[str, str]]) -> dict[str, int]:
    """Return how many calls ended in each outcome, for example ``{"completed": 3, "failed": 1}``."""
    return dict(sorted(Counter(outcome["outcome"] for outcome in outcomes.values()).items()))


def outcome_entry(status: CallStatus) -> dict[str, str]:
    """Return a terminal call's entry in the SID mapping: raw status, reason and outcome."""
    return {"status": status.status, "reason": status.reason, "outcome": status.outcome}


def failed_call_sids(outcomes: dict[str, dict[str, str]], failure_statuses: Iterable[str]) -> list[str]:
    """Return, sorted, the SIDs whose raw status or outcome is in ``failure_statuses``."""
    statuses = frozenset(failure_statuses)
    return sorted(
        call_sid
        for call_sid, outcome in outcomes.items()
        if outcome["status"] in statuses or outcome.get("outcome") in statuses
    )


class OutboundCallsBatchTrigger(BaseTrigger):
    """Poll many calls from one trigger until every one is terminal or the deadline passes.

    Each call SID keeps its own schedule (``poke_interval`` while queued or ringing,
    ``in_progress_poke_interval`` once in progress, backoff after transient errors), and at most
    ``max_concurrency`` status requests are in flight at once. A timer per SID puts it on a queue
    when it is due and a fixed set of workers drains the queue, so a poll allocates no task. The
    first polls are spread over ``poke_interval`` so that thousands of SIDs do not start as one burst.

    The trigger fires one event. Its payload has ``event`` set to ``"terminal"`` (every call
    ended), ``"timeout"`` or ``"error"`` (a permanent error on one SID, named in ``message``). It
    also has ``outcomes`` (SID to ``{"status", "reason", "outcome"}`` for the calls that ended),
    ``counts`` (calls per raw terminal status), ``outcome_counts`` (calls per outcome), ``pending``
    (SID to last status seen, for the other calls) and ``generation`` (the API generation that
    reported the statuses, ``None`` before the first status is read).

    With ``end_from_trigger``, when every call ended and none in a raw status or outcome of
    ``failure_statuses``, the event is a ``TaskSuccessEvent`` that stores ``return_value`` (the
    outcomes), ``counts`` and ``outcome_counts`` as XComs, so the task ends on the triggerer. It
    resumes the task on a worker instead when ``failure_statuses`` names a raw status that the
    generation never reports, so that the worker fails the task with that mistake named. A trigger
    not started by a triggerer (``dag.test()``) always fires the plain event.

    :param call_sids: SIDs of the calls to watch; each is polled once per due time.
    :param polyai_conn_id: id of the ``polyai`` connection.
    :param poke_interval: seconds between polls of a call that is queued or ringing.
    :param in_progress_poke_interval: seconds between polls of a call that is in progress.
    :param deadline: UNIX time in seconds after which the trigger gives up; ``None`` waits forever.
    :param max_concurrency: status requests in flight at most.
    :param end_from_trigger: end a successful task from the triggerer, as described above.
    :param failure_statuses: terminal statuses or outcomes that fail the task; only read with
        ``end_from_trigger``.
    """

    def __init__(
        self,
        call_sids: Iterable[str],
        polyai_conn_id: str = "polyai_default",
        poke_interval: float = 3.0,
        in_progress_poke_interval: float = 15.0,
        deadline: float | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        end_from_trigger: bool = False,
        failure_statuses: Iterable[str] = (),
    ) -> None:
        super().__init__()
        self.call_sids = list(call_sids)
        self.polyai_conn_id = polyai_conn_id
        self.poke_interval = float(poke_interval)
        self.in_progress_poke_interval = float(in_progress_poke_interval)
        self.deadline = deadline
        self.max_concurrency = int(max_concurrency)
        self.end_from_trigger = bool(end_from_trigger)
        self.failure_statuses = sorted(failure_statuses)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "call_sids": list(self.call_sids),
                "polyai_conn_id": self.polyai_conn_id,
                "poke_interval": self.poke_interval,
                "in_progress_poke_interval": self.in_progress_poke_interval,
                "deadline": self.deadline,
                "max_concurrency": self.max_concurrency,
                "end_from_trigger": self.end_from_trigger,
                "failure_statuses": list(self.failure_statuses),
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_provider_polyai.hooks.polyai import PolyAIHook

        hook = PolyAIHook(polyai_conn_id=self.polyai_conn_id)
        try:
            yield await _BatchWait(self, hook).run()
        finally:
            await hook.aclose()


class _BatchWait:
    """The state of one run of :class:`OutboundCallsBatchTrigger`."""

    def __init__(self, trigger: OutboundCallsBatchTrigger, hook: PolyAIHook) -> None:
        self.trigger = trigger
        self.hook = hook
        self.log = trigger.log
        self.loop = asyncio.get_running_loop()
        # SID -> last status seen (None before the first successful poll), for calls not yet ended.
        self.pending: dict[str, str | None] = dict.fromkeys(trigger.call_sids)
        self.outcomes: dict[str, dict[str, str]] = {}
        self.generation: str | None = None
        self.errors_in_row: dict[str, int] = {}
        self.warned_unknown: set[str] = set()
        self.due: asyncio.Queue[str] = asyncio.Queue()
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.finished: asyncio.Future[TriggerEvent] = self.loop.create_future()

    async def run(self) -> TriggerEvent:
        trigger = self.trigger
        if not self.pending:
            return self._event("terminal")

        start = self.loop.time()
        spread = trigger.poke_interval / len(self.pending)
        for index, call_sid in enumerate(self.pending):
            self.timers[call_sid] = self.loop.call_at(start + index * spread, self.due.put_nowait, call_sid)
        deadline_timer = None
        if trigger.deadline is not None:
            delay = max(0.0, trigger.deadline - time.time())
            deadline_timer = self.loop.call_later(delay, self._finish_timeout)

        workers = [
            asyncio.ensure_future(self._work()) for _ in range(max(1, min(trigger.max_concurrency, len(self.pending))))
        ]
        try:
            return await self.finished
        finally:
            for worker in workers:
                worker.cancel()
            for timer in self.timers.values():
                timer.cancel()
            if deadline_timer is not None:
                deadline_timer.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    def _schedule(self, call_sid: str, delay: float) -> None:
        self.timers[call_sid] = self.loop.call_later(delay, self.due.put_nowait, call_sid)

    async def _work(self) -> None:
        trigger = self.trigger
        while not self.finished.done():
            call_sid = await self.due.get()
            if call_sid not in self.pending:
                continue
            poll_started = self.loop.time()
            try:
                status = await self.hook.aget_call_status(call_sid, max_attempts=1)
            except PolyAITransientError as err:
                self._schedule(call_sid, self._backoff(call_sid, err))
                continue
            except PolyAICallNotFoundError as err:
                message = explain_not_found(call_sid, self.pending.get(call_sid), err)
                self._finish(self._event("error", message))
                return
            except PolyAIError as err:
                self._finish(self._event("error", str(err)))
                return

            self.errors_in_row.pop(call_sid, None)
            self.generation = status.generation
            if status.is_terminal:
                self._record_outcome(status)
                continue
            self._note_status(status)
            interval = next_poll_interval(status.status, trigger.poke_interval, trigger.in_progress_poke_interval)
            # The interval runs from the start of the poll, so a slow response does not stretch it.
            self.timers[call_sid] = self.loop.call_at(poll_started + interval, self.due.put_nowait, call_sid)

    def _backoff(self, call_sid: str, err: PolyAITransientError) -> float:
        errors = self.errors_in_row.get(call_sid, 0) + 1
        self.errors_in_row[call_sid] = errors
        wait = err.retry_after
        if wait is None:
            wait = min(MAX_ERROR_BACKOFF_SECONDS, self.trigger.poke_interval * 2 ** (errors - 1))
            wait *= random.uniform(0.5, 1.0)
        # One line per SID on the 1st, 10th, 100th ... error in a row, so an outage of the API
        # does not write a line per poll of every call.
        if str(errors).rstrip("0") == "1":
            self.log.warning(
                "Call %s: status poll failed (%d in a row), next poll in %.1f s: %s", call_sid, errors, wait, err
            )
        return wait

    def _note_status(self, status: CallStatus) -> None:
        if not status.is_known and status.status not in self.warned_unknown:
            self.warned_unknown.add(status.status)
            self.log.warning(
                "Call %s: PolyAI reported status %r, which its documentation does not list; "
                "treating it as not terminal and polling on.",
                status.call_sid,
                status.status,
            )
        previous = self.pending[status.call_sid]
        if status.status != previous:
            self.log.info("Call %s: %s -> %s", status.call_sid, previous, status.status)
            self.pending[status.call_sid] = status.status

    def _record_outcome(self, status: CallStatus) -> None:
        previous = self.pending.pop(status.call_sid)
        self.outcomes[status.call_sid] = outcome_entry(status)
        self.log.info(
            "Call %s: %s -> %s (%s); %d of %d calls ended",
            status.call_sid,
            previous,
            status.status,
            status.reason or "-",
            len(self.outcomes),
            len(self.trigger.call_sids),
        )
        if not self.pending:
            self._finish(self._terminal_event())

    def _finish(self, event: TriggerEvent) -> None:
        if not self.finished.done():
            self.finished.set_result(event)

    def _finish_timeout(self) -> None:
        self._finish(
            self._event(
                "timeout",
                f"{len(self.pending)} of {len(self.trigger.call_sids)} calls did not reach a terminal "
                "status before the sensor's timeout.",
            )
        )

    def _terminal_event(self) -> TriggerEvent:
        trigger = self.trigger
        failed = bool(failed_call_sids(self.outcomes, trigger.failure_statuses))
        # A raw status of another generation can never match; the worker fails the task naming it.
        foreign = bool(self.generation and foreign_failure_statuses(trigger.failure_statuses, self.generation))
        if trigger.end_from_trigger and trigger.task_instance is not None and not failed and not foreign:
            from airflow.triggers.base import TaskSuccessEvent

            # Copied because dict is invariant: a dict[str, str] does not type-check as dict[str, JsonValue].
            outcomes: dict[str, JsonValue] = {call_sid: {**entry} for call_sid, entry in self.outcomes.items()}
            counts: dict[str, JsonValue] = {**count_statuses(self.outcomes)}
            outcome_counts: dict[str, JsonValue] = {**count_outcomes(self.outcomes)}
            return TaskSuccessEvent(
                xcoms={"return_value": outcomes, "counts": counts, "outcome_counts": outcome_counts}
            )
        return self._event("terminal")

    def _event(self, kind: str, message: str = "") -> TriggerEvent:
        return TriggerEvent(
            {
                "event": kind,
                "outcomes": dict(self.outcomes),
                "counts": count_statuses(self.outcomes),
                "outcome_counts": count_outcomes(self.outcomes),
                "pending": dict(self.pending),
                "generation": self.generation,
                "message": message,
            }
        )
