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
from airflow_provider_polyai.waiting import explain_not_found

if TYPE_CHECKING:
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

    :param call_sid: SID of the call to watch.
    :param polyai_conn_id: id of the ``polyai`` connection.
    :param poke_interval: seconds between polls while the call is queued or ringing.
    :param in_progress_poke_interval: seconds between polls once the call is in progress.
    :param deadline: UNIX time in seconds after which the trigger gives up; ``None`` waits forever.
    :param last_status: status already seen by the task, so the first status change is logged right.
    """

    def __init__(
        self,
        call_sid: str,
        polyai_conn_id: str = "polyai_default",
        poke_interval: float = 3.0,
        in_progress_poke_interval: float = 15.0,
        deadline: float | None = None,
        last_status: str | None = None,
    ) -> None:
        super().__init__()
        self.call_sid = call_sid
        self.polyai_conn_id = polyai_conn_id
        self.poke_interval = float(poke_interval)
        self.in_progress_poke_interval = float(in_progress_poke_interval)
        self.deadline = deadline
        self.last_status = last_status

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "call_sid": self.call_sid,
                "polyai_conn_id": self.polyai_conn_id,
                "poke_interval": self.poke_interval,
                "in_progress_poke_interval": self.in_progress_poke_interval,
                "deadline": self.deadline,
                "last_status": self.last_status,
            },
        )

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
            }
        )

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
                yield self._event("terminal", latest)
                return

            interval = next_poll_interval(latest.status, self.poke_interval, self.in_progress_poke_interval)
            if latest.status != self.last_status:
                self.log.info(
                    "Call %s: %s -> %s, next poll in %.0f s",
                    self.call_sid,
                    self.last_status,
                    latest.status,
                    interval,
                )
                self.last_status = latest.status
            await asyncio.sleep(max(0.0, min(interval, self._seconds_left())))

