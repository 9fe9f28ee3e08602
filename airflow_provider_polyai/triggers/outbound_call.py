"""Trigger that polls one outbound call until it reaches a terminal status."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_polyai.exceptions import PolyAICallNotFoundError, PolyAIError, PolyAITransientError
from airflow_provider_polyai.models import CallStatus, next_poll_interval
from airflow_provider_polyai.waiting import explain_not_found, foreign_failure_statuses

if TYPE_CHECKING:
    from pydantic import JsonValue

    from airflow_provider_polyai.hooks.polyai import PolyAIHook

#: Longest wait between two polls after consecutive transient errors, in seconds.
MAX_ERROR_BACKOFF_SECONDS = 60.0


class OutboundCallStatusTrigger(BaseTrigger):
    """Poll a call's status on PolyAI's advised schedule until it is terminal or the deadline passes.

    Everything the trigger needs is in its serialized keyword arguments, including the deadline as
    an absolute time, so a triggerer that restarts and rebuilds it resumes the same wait and cannot
    extend it. Transient errors (HTTP 429 or 5xx, connection errors, timeouts, malformed bodies) are
    retried with exponential backoff until the deadline; only a permanent error or the deadline ends
    the wait early.

    The trigger fires one event whose payload has ``event`` set to ``"terminal"`` (with ``status``
    and ``reason``), ``"timeout"`` (with the last status seen) or ``"error"`` (with ``message``).

    With ``end_from_trigger``, a terminal status outside ``failure_statuses`` ends the task from the
    triggerer instead: the event is a ``TaskSuccessEvent`` whose XComs (``return_value``, ``status``,
    ``reason``) Airflow stores, so no worker slot is taken after the wait. Every other outcome still
    resumes the task on a worker. ``dag.test()`` passes only a ``TaskSuccessEvent``'s state to the
    task, so a trigger that was not started by a triggerer (no ``task_instance`` set) always fires
    the plain event.

    :param call_sid: SID of the call to watch.
    :param polyai_conn_id: id of the ``polyai`` connection.
    :param poke_interval: seconds between polls while the call is queued or ringing.
    :param in_progress_poke_interval: seconds between polls once the call is in progress.
    :param deadline: UNIX time in seconds after which the trigger gives up; ``None`` waits forever.
    :param last_status: status already seen by the task, so the first status change is logged right.
    :param end_from_trigger: end a successful task from the triggerer, as described above.
    :param failure_statuses: terminal statuses that fail the task; only read with ``end_from_trigger``.
    """

    def __init__(
        self,
        call_sid: str,
        polyai_conn_id: str = "polyai_default",
        poke_interval: float = 3.0,
        in_progress_poke_interval: float = 15.0,
        deadline: float | None = None,
        last_status: str | None = None,
        end_from_trigger: bool = False,
        failure_statuses: list[str] | tuple[str, ...] = (),
    ) -> None:
        super().__init__()
        self.call_sid = call_sid
        self.polyai_conn_id = polyai_conn_id
        self.poke_interval = float(poke_interval)
        self.in_progress_poke_interval = float(in_progress_poke_interval)
        self.deadline = deadline
        self.last_status = last_status
        self.end_from_trigger = bool(end_from_trigger)
        self.failure_statuses = sorted(failure_statuses)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "call_sid": self.call_sid,
            "polyai_conn_id": self.polyai_conn_id,
            "poke_interval": self.poke_interval,
            "in_progress_poke_interval": self.in_progress_poke_interval,
            "deadline": self.deadline,
            "last_status": self.last_status,
        }
        # Left out when off, so the keyword arguments match those of triggers serialized before
        # these options existed.
        if self.end_from_trigger:
            kwargs["end_from_trigger"] = True
            kwargs["failure_statuses"] = list(self.failure_statuses)
        return f"{type(self).__module__}.{type(self).__qualname__}", kwargs

    def _seconds_left(self) -> float:
        return float("inf") if self.deadline is None else self.deadline - time.time()

    def _event(self, kind: str, status: CallStatus | None, message: str = "") -> TriggerEvent:
        return TriggerEvent(
            {
                "event": kind,
                "call_sid": self.call_sid,
                "status": status.status if status else self.last_status,
                "reason": status.reason if status else "",
                "message": message,
                # Added with API generations: the status in the shared outcome vocabulary, and the
                # generation that reported it, so the task can rebuild the same CallStatus.
                "outcome": status.outcome if status else None,
                "generation": status.generation if status else None,
            }
        )

    def _terminal_event(self, status: CallStatus) -> TriggerEvent:
        if (
            self.end_from_trigger
            and self.task_instance is not None
            and not status.matches(self.failure_statuses)
            and not foreign_failure_statuses(self.failure_statuses, status.generation)
        ):
            from airflow.triggers.base import TaskSuccessEvent

            # Copied because dict is invariant: a dict[str, str] does not type-check as dict[str, JsonValue].
            return_value: dict[str, JsonValue] = {**status.to_xcom()}
            return TaskSuccessEvent(
                xcoms={
                    "return_value": return_value,
                    "status": status.status,
                    "reason": status.reason,
                    "outcome": status.outcome,
                }
            )
        return self._event("terminal", status)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_provider_polyai.hooks.polyai import PolyAIHook

        hook = PolyAIHook(polyai_conn_id=self.polyai_conn_id)
        try:
            async for event in self._poll(hook):
                yield event
                return
        finally:
            await hook.aclose()

    async def _poll(self, hook: PolyAIHook) -> AsyncIterator[TriggerEvent]:
        latest: CallStatus | None = None
        consecutive_errors = 0
        warned_unknown: set[str] = set()

        if self.last_status is not None:
            # The task read this status just before deferring; polling again at once would break
            # the schedule. After a triggerer restart this delays the first poll by one interval.
            first_wait = next_poll_interval(self.last_status, self.poke_interval, self.in_progress_poke_interval)
            await asyncio.sleep(max(0.0, min(first_wait, self._seconds_left())))

        while True:
            if self._seconds_left() <= 0:
                yield self._event(
                    "timeout",
                    latest,
                    f"Call {self.call_sid} did not reach a terminal status before the sensor's timeout; "
                    f"last status {self.last_status!r}.",
                )
                return

            poll_started = time.monotonic()
            try:
                latest = await hook.aget_call_status(self.call_sid, max_attempts=1)
            except PolyAITransientError as err:
                consecutive_errors += 1
                wait = err.retry_after
                if wait is None:
                    wait = min(MAX_ERROR_BACKOFF_SECONDS, self.poke_interval * 2 ** (consecutive_errors - 1))
                    wait *= random.uniform(0.5, 1.0)
                self.log.warning(
                    "Call %s: status poll failed (%d in a row), next poll in %.1f s: %s",
                    self.call_sid,
                    consecutive_errors,
                    wait,
                    err,
                )
                await asyncio.sleep(max(0.0, min(wait, self._seconds_left())))
                continue
            except PolyAICallNotFoundError as err:
                yield self._event("error", None, explain_not_found(self.call_sid, self.last_status, err))
                return
            except PolyAIError as err:
                yield self._event("error", None, str(err))
                return

            consecutive_errors = 0
            if not latest.is_known and latest.status not in warned_unknown:
                warned_unknown.add(latest.status)
                self.log.warning(
                    "Call %s: PolyAI reported status %r, which its documentation does not list; "
                    "treating it as not terminal and polling on.",
                    self.call_sid,
                    latest.status,
                )
            if latest.is_terminal:
                self.log.info(
                    "Call %s: %s -> %s (%s)", self.call_sid, self.last_status, latest.status, latest.reason or "-"
                )
                self.last_status = latest.status
                yield self._terminal_event(latest)
                return

            interval = next_poll_interval(latest.status, self.poke_interval, self.in_progress_poke_interval)
            if latest.status != self.last_status:
                self.log.info(
                    "Call %s: %s -> %s, next poll in %.1f s",
                    self.call_sid,
                    self.last_status,
                    latest.status,
                    interval,
                )
                self.last_status = latest.status
            # The interval runs from the start of the poll, so a slow response does not stretch it.
            interval -= time.monotonic() - poll_started
            await asyncio.sleep(max(0.0, min(interval, self._seconds_left())))

