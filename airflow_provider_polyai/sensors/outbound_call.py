"""Sensor that waits for an outbound call to reach a terminal status."""

from __future__ import annotations

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
from airflow_provider_polyai.models import CallStatus, next_poll_interval
from airflow_provider_polyai.validation import validate_call_sid
from airflow_provider_polyai.waiting import (
    DEFERRAL_TIMEOUT_GRACE_SECONDS,
    deadline_after,
    default_deferrable,
    default_end_from_trigger,
    explain_not_found,
    push_outcome,
    raise_if_failure,
    status_from_event,
    validate_failure_statuses,
    validate_intervals,
)

if TYPE_CHECKING:
    import datetime

    from airflow.sdk import Context
    from airflow.triggers.base import StartTriggerArgs

    from airflow_provider_polyai.hooks.polyai import PolyAIHook


class OutboundCallStatusSensor(BaseSensorOperator):
    """Wait until a PolyAI outbound call reaches a terminal status.

    The sensor polls every ``poke_interval`` seconds while the call is queued or ringing and every
    ``in_progress_poke_interval`` seconds once it is in progress, as PolyAI advises (2–5 s and
    10–30 s), and stops at the first terminal status. In the default deferrable mode the waiting is
    done by :class:`~airflow_provider_polyai.triggers.outbound_call.OutboundCallStatusTrigger` on
    the triggerer, so no worker slot is held; ``mode="poke"`` and ``mode="reschedule"`` follow the
    same schedule from a worker.

    The task succeeds on every terminal status except those in ``failure_statuses``, which fail it
    without retries. In both cases the outcome is in XCom first: the return value
    ``{"call_sid", "status", "reason"}`` and the keys ``status`` and ``reason``. ``timeout`` counts
    from the first poke and is an absolute deadline in every mode.

    :param call_sid: SID of the call to wait for (templated), for example
        ``call_sid=place_call.output``.
    :param polyai_conn_id: id of the ``polyai`` connection.
    :param deferrable: wait on the triggerer. Defaults to ``True`` unless the deployment sets
        ``AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE`` (see :func:`~airflow_provider_polyai.waiting.default_deferrable`).
    :param poke_interval: seconds between polls while the call is queued or ringing.
    :param in_progress_poke_interval: seconds between polls once the call is in progress.
    :param failure_statuses: terminal statuses that fail the task, for example ``("failed", "busy")``.
    :param end_from_trigger: when deferred and the call ends in a status outside ``failure_statuses``,
        end the task from the triggerer with the same XComs, so no worker slot is taken after the
        wait. Failure statuses, errors and timeouts still resume the task on a worker, where it fails
        with its message in the task log and without retries, as in the other modes. Defaults to
        ``True`` unless plugins register listeners, which Airflow does not allow with it.
    :param start_from_trigger: start the wait on the triggerer without running on a worker at all.
        ``call_sid`` must then be a string at parse time: a literal SID or a template that the
        triggerer can render (``params``, ``dag_run.conf``), not an upstream task's output, because
        Airflow resolves XCom arguments only on a worker. Airflow 3.3 ignores it for mapped tasks,
        which run on a worker and defer as usual. ``timeout`` then becomes Airflow's trigger timeout,
        counted from when the task is scheduled, and a timeout fails the task with Airflow's own
        message rather than the last status seen.
    """

    template_fields: Sequence[str] = ("call_sid",)
    ui_color = "#e7dcfb"

    def __init__(
        self,
        *,
        call_sid: str,
        polyai_conn_id: str = "polyai_default",
        deferrable: bool | None = None,
        poke_interval: float = 3.0,
        in_progress_poke_interval: float = 15.0,
        failure_statuses: Iterable[str] = (),
        end_from_trigger: bool | None = None,
        start_from_trigger: bool = False,
        **kwargs: Any,
    ) -> None:
        validate_intervals(poke_interval, in_progress_poke_interval)
        super().__init__(poke_interval=poke_interval, **kwargs)
        self.call_sid = call_sid
        self.polyai_conn_id = polyai_conn_id
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.in_progress_poke_interval = float(in_progress_poke_interval)
        self.failure_statuses = validate_failure_statuses(failure_statuses)
        self.end_from_trigger = default_end_from_trigger() if end_from_trigger is None else end_from_trigger
        self.start_from_trigger = start_from_trigger
        self._last_status: str | None = None
        if start_from_trigger:
            self.start_trigger_args = self._start_trigger_args()

    def _start_trigger_args(self) -> StartTriggerArgs:
        # Imported here: airflow.triggers.base adds about 25 ms to every DAG file parse.
        from airflow.triggers.base import StartTriggerArgs

        if not isinstance(self.call_sid, str):
            raise PolyAIInvalidInputError(
                f"start_from_trigger=True needs call_sid as a string at parse time, got "
                f"{type(self.call_sid).__name__}. Pass a SID or a template the triggerer can render "
                "(params, dag_run.conf), or drop start_from_trigger to use an upstream task's output."
            )
        return StartTriggerArgs(
            trigger_cls="airflow_provider_polyai.triggers.outbound_call.OutboundCallStatusTrigger",
            next_method="execute_complete",
            trigger_kwargs={
                "call_sid": self.call_sid,
                "polyai_conn_id": self.polyai_conn_id,
                "poke_interval": self.poke_interval,
                "in_progress_poke_interval": self.in_progress_poke_interval,
                "deadline": None,
                "last_status": None,
                "end_from_trigger": self.end_from_trigger,
                "failure_statuses": sorted(self.failure_statuses),
            },
            timeout=timedelta(seconds=self.timeout),
        )

    def _hook(self) -> PolyAIHook:
        from airflow_provider_polyai.hooks.polyai import PolyAIHook

        return PolyAIHook(polyai_conn_id=self.polyai_conn_id)

    def execute(self, context: Context) -> Any:
        validate_call_sid(self.call_sid)
        if not self.deferrable:
            return super().execute(context)

        deadline = deadline_after(self.timeout)
        try:
            status: CallStatus | None = self._read_status()
        except PolyAITransientError as err:
            self.log.warning("Call %s: first status poll failed, the trigger will retry: %s", self.call_sid, err)
            status = None
        if status is not None and status.is_terminal:
            return self._finish(context, status)

        from airflow_provider_polyai.triggers.outbound_call import OutboundCallStatusTrigger

        self.log.info(
            "Call %s is %s; deferring until it ends (timeout %.0f s).",
            self.call_sid,
            status.status if status else "unknown",
            self.timeout,
        )
        self.defer(
            trigger=OutboundCallStatusTrigger(
                call_sid=self.call_sid,
                polyai_conn_id=self.polyai_conn_id,
                poke_interval=self.poke_interval,
                in_progress_poke_interval=self.in_progress_poke_interval,
                deadline=deadline,
                last_status=status.status if status else None,
                end_from_trigger=self.end_from_trigger,
                failure_statuses=sorted(self.failure_statuses),
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout + DEFERRAL_TIMEOUT_GRACE_SECONDS),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, str]:
        """Finish the task with the outcome the trigger reported."""
        return self._finish(context, status_from_event(event))

    def poke(self, context: Context) -> bool | PokeReturnValue:
        try:
            status = self._read_status()
        except PolyAITransientError as err:
            # The hook has already retried; the wait goes on until the sensor's timeout.
            if self.exponential_backoff:
                self.log.warning(
                    "Call %s: status poll failed, next poll after the exponential backoff: %s", self.call_sid, err
                )
            else:
                interval = next_poll_interval(
                    self._last_status or "", self.poke_interval, self.in_progress_poke_interval
                )
                self.log.warning("Call %s: status poll failed, next poll in %.1f s: %s", self.call_sid, interval, err)
            return False
        if not status.is_terminal:
            return False
        return PokeReturnValue(is_done=True, xcom_value=self._finish(context, status))

    def _read_status(self) -> CallStatus:
        try:
            status = self._hook().get_call_status(self.call_sid)
        except PolyAICallNotFoundError as err:
            raise AirflowFailException(explain_not_found(self.call_sid, self._last_status, err)) from err
        # Warned once per change of status, not on every poke that reads it again.
        if not status.is_known and status.status != self._last_status:
            self.log.warning(
                "Call %s: PolyAI reported status %r, which its documentation does not list; polling on.",
                self.call_sid,
                status.status,
            )
        if status.status != self._last_status and status.is_terminal:
            self.log.info("Call %s: %s -> %s", self.call_sid, self._last_status, status.status)
        elif status.status != self._last_status:
            interval = next_poll_interval(status.status, self.poke_interval, self.in_progress_poke_interval)
            self.log.info(
                "Call %s: %s -> %s, next poll in %.1f s", self.call_sid, self._last_status, status.status, interval
            )
        self._last_status = status.status
        return status

    def _finish(self, context: Context, status: CallStatus) -> dict[str, str]:
        """Push the outcome to XCom, then fail the task if the status is a failure status."""
        self.log.info("Call %s ended: %s (%s)", status.call_sid, status.status, status.reason or "no reason")
        push_outcome(context, status)
        if status.matches(self.failure_statuses):
            # The return value is pushed by hand because a failing task returns nothing.
            context["ti"].xcom_push(key="return_value", value=status.to_xcom())
        raise_if_failure(status, self.failure_statuses)
        return status.to_xcom()

    def _get_next_poke_interval(
        self,
        started_at: datetime.datetime | float,
        run_duration: Callable[[], float],
        poke_count: int,
    ) -> float:
        """Follow PolyAI's schedule for the status just read, never past the timeout."""
        interval = next_poll_interval(self._last_status or "", self.poke_interval, self.in_progress_poke_interval)
        if self.exponential_backoff:
            interval = super()._get_next_poke_interval(started_at, run_duration, poke_count)
        return max(0.0, min(interval, self.timeout - run_duration()))
