"""Operator that places a PolyAI outbound call and can wait for its outcome."""

from __future__ import annotations

import ast
import json
import time
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperator

from airflow_provider_polyai.calling_window import CallingWindow
from airflow_provider_polyai.exceptions import (
    AirflowFailException,
    PolyAICallOutcomeUnknownError,
    PolyAIError,
    PolyAIInvalidInputError,
    PolyAITransientError,
)
from airflow_provider_polyai.models import CallStatus, next_poll_interval
from airflow_provider_polyai.version_compat import (
    AirflowSensorTimeout,
    AirflowSkipException,
    TaskDeferralTimeout,
)
from airflow_provider_polyai.waiting import (
    DEFERRAL_TIMEOUT_GRACE_SECONDS,
    XCOM_CALL_SID_KEY,
    deadline_after,
    default_deferrable,
    push_outcome,
    raise_if_failure,
    status_from_event,
    validate_failure_statuses,
    validate_intervals,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_polyai.hooks.polyai import PolyAIHook

#: Key in the task state store that records the call placed by this task instance across its tries.
CALL_RECORD_KEY = "polyai_outbound_call"

#: Values of ``outside_window``: wait for the calling window to open, or skip the task.
OUTSIDE_WINDOW_ACTIONS = ("defer", "skip")


class TriggerOutboundCallOperator(BaseOperator):
    """Place an outbound call through PolyAI and return its call SID.

    The SID is the task's return value and is also pushed under the XCom key ``call_sid``. With
    ``wait_for_completion`` the task then waits for the call to end exactly like
    :class:`~airflow_provider_polyai.sensors.outbound_call.OutboundCallStatusSensor` (same trigger,
    schedule, ``failure_statuses`` and XCom keys ``status`` and ``reason``); the return value stays
    the SID.

    A person is never called twice by a retry. Before dialling, the operator records the attempt in
    Airflow's task state store, which keeps it across tries of the same task instance. A later try
    that finds a call SID there reuses it (and waits for it if asked) instead of dialling. A try that
    finds a trigger request whose outcome was unknown fails, because PolyAI may have placed that call.
    ``redial_on_retry=True`` dials again on every try. Airflow before 3.3 has no task state store, so
    there a try after the first fails unless ``redial_on_retry`` is set, even when the first try's
    error shows that nothing was queued: task retries then never dial. Transient errors are still
    retried inside each try by the hook (five attempts per request, with backoff).

    :param to_number: number to call (templated), in E.164 form unless ``country_code`` is given.
    :param country_code: ISO 3166-1 alpha-2 region (templated), also used to read a national number.
    :param encryption: ``TLS/SRTP`` (PolyAI's default) or ``UDP/RTP``.
    :param metadata: JSON object (templated) passed to the agent as ``conv.integration_attributes``;
        a string holding a JSON object is accepted too.
    :param polyai_conn_id: id of the ``polyai`` connection.
    :param wait_for_completion: wait until the call reaches a terminal status.
    :param deferrable: wait on the triggerer rather than in a worker slot. Defaults to ``True`` unless
        the deployment sets ``AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE`` (see
        :func:`~airflow_provider_polyai.waiting.default_deferrable`).
    :param poke_interval: seconds between polls while the call is queued or ringing.
    :param in_progress_poke_interval: seconds between polls once the call is in progress.
    :param failure_statuses: terminal statuses that fail the task when waiting.
    :param wait_timeout: longest wait for the outcome, from the moment the call is placed.
    :param redial_on_retry: dial again on a retry even if an earlier try placed the call.
    :param calling_window: local hours and weekdays in which the call may be placed (templated), as a
        :class:`~airflow_provider_polyai.calling_window.CallingWindow` or its dict form
        ``{"start": "09:00", "end": "20:00", "weekdays": "mon-fri"}``. It is checked in every time
        zone of the destination number, and again when a wait for it ends. ``None`` allows any hour.
        It is not checked when an earlier try already placed the call.
    :param time_zone: IANA zone (templated) to check the calling window in, instead of the zones
        phonenumbers gives for the number. Required for numbers whose zone is unknown.
    :param outside_window: what to do outside the calling window: ``"defer"`` waits until it
        opens (on the triggerer with ``DateTimeTrigger`` when ``deferrable``, else in the worker),
        ``"skip"`` skips the task.
    """

    template_fields: Sequence[str] = ("to_number", "country_code", "metadata", "calling_window", "time_zone")
    template_fields_renderers: ClassVar[dict[str, str]] = {"metadata": "json"}
    #: Seconds Airflow's own deferral timeout waits past ``wait_timeout``, so that the trigger's
    #: timeout event, which carries the last status seen, normally arrives first.
    deferral_timeout_grace_seconds: ClassVar[float] = DEFERRAL_TIMEOUT_GRACE_SECONDS
    ui_color = "#d9c8f7"

    def __init__(
        self,
        *,
        to_number: str,
        country_code: str | None = None,
        encryption: str | None = None,
        metadata: dict[str, Any] | str | None = None,
        polyai_conn_id: str = "polyai_default",
        wait_for_completion: bool = False,
        deferrable: bool | None = None,
        poke_interval: float = 3.0,
        in_progress_poke_interval: float = 15.0,
        failure_statuses: Iterable[str] = (),
        wait_timeout: timedelta | float = timedelta(hours=1),
        redial_on_retry: bool = False,
        calling_window: CallingWindow | dict[str, Any] | None = None,
        time_zone: str | None = None,
        outside_window: str = "defer",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        validate_intervals(poke_interval, in_progress_poke_interval)
        self.to_number = to_number
        self.country_code = country_code
        self.encryption = encryption
        self.metadata = metadata
        self.polyai_conn_id = polyai_conn_id
        self.wait_for_completion = wait_for_completion
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.poke_interval = float(poke_interval)
        self.in_progress_poke_interval = float(in_progress_poke_interval)
        self.failure_statuses = validate_failure_statuses(failure_statuses)
        self.wait_timeout = (
            wait_timeout.total_seconds() if isinstance(wait_timeout, timedelta) else float(wait_timeout)
        )
        if self.wait_timeout <= 0:
            raise ValueError(f"wait_timeout must be positive, got {wait_timeout!r}.")
        self.redial_on_retry = redial_on_retry
        self.calling_window = _calling_window_field(calling_window)
        self.time_zone = time_zone
        if outside_window not in OUTSIDE_WINDOW_ACTIONS:
            raise ValueError(f"outside_window must be one of {OUTSIDE_WINDOW_ACTIONS}, got {outside_window!r}.")
        self.outside_window = outside_window

    def _hook(self) -> PolyAIHook:
        from airflow_provider_polyai.hooks.polyai import PolyAIHook

        return PolyAIHook(polyai_conn_id=self.polyai_conn_id)

    def execute(self, context: Context) -> str:
        if self.calling_window and not self._earlier_try_recorded_call(context):
            self._wait_for_calling_window(context)
        call_sid = self._place_call_once(context)
        context["ti"].xcom_push(key=XCOM_CALL_SID_KEY, value=call_sid)
        if not self.wait_for_completion:
            return call_sid

        # The wait counts from when the call was placed, which may be an earlier try's doing.
        placed_at = self._placed_at
        deadline = deadline_after(self.wait_timeout) if placed_at is None else placed_at + self.wait_timeout
        # Past the deadline, the worker polls once so a call that has ended still reports its status.
        if self.deferrable and deadline > time.time():
            from airflow_provider_polyai.triggers.outbound_call import OutboundCallStatusTrigger

            self.defer(
                trigger=OutboundCallStatusTrigger(
                    call_sid=call_sid,
                    polyai_conn_id=self.polyai_conn_id,
                    poke_interval=self.poke_interval,
                    in_progress_poke_interval=self.in_progress_poke_interval,
                    deadline=deadline,
                ),
                method_name="execute_complete",
                timeout=timedelta(seconds=self.wait_timeout + self.deferral_timeout_grace_seconds),
            )
        self._finish(context, self._poll_until_terminal(call_sid, deadline))
        return call_sid

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> str:
        """Finish the task with the outcome the trigger reported; return the call SID."""
        status = status_from_event(event)
        self._finish(context, status)
        return status.call_sid

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """Resume after deferral, making Airflow's deferral timeout as final as the trigger's timeout."""
        try:
            return super().resume_execution(next_method, next_kwargs, context)
        except TaskDeferralTimeout as err:
            # Airflow raises this when no trigger event came in time, for example while no
            # triggerer ran. Airflow retries it, and a retry would wait a fresh wait_timeout.
            raise AirflowSensorTimeout(
                f"The call to {self.to_number} did not reach a terminal status within "
                f"{self.wait_timeout:.0f} s, and no trigger event arrived before Airflow's deferral "
                f"timeout ({err}). Check that a triggerer is running."
            ) from err

    def execute_after_window(self, context: Context, event: Any = None) -> str:
        """Resume when the calling window should have opened: check it again, then dial."""
        self.log.info("Wait for the calling window of %s ended; checking the window again.", self.to_number)
        return self.execute(context)

    def _earlier_try_recorded_call(self, context: Context) -> bool:
        """Return whether an earlier try left a call record, so this try must not wait to dial."""
        if self.redial_on_retry:
            return False
        store = context.get("task_state_store")
        if store is None:
            # Without a store a later try fails in _place_call_once, so it must not wait for the window first.
            return context["ti"].try_number > 1
        return bool(store.get(CALL_RECORD_KEY))

    def _wait_for_calling_window(self, context: Context) -> None:
        """Return once the calling window is open in every zone of the number; until then defer, sleep or skip.

        A deferral resumes in :meth:`execute_after_window`, which checks the window again.
        """
        from airflow_provider_polyai import calling_window

        window = _rendered_calling_window(self.calling_window)
        if window is None:
            return
        time_zone = None if self.time_zone in (None, "", "None") else str(self.time_zone)
        zones = calling_window.time_zones_for(self.to_number, self.country_code, time_zone)
        while True:
            check = calling_window.check_calling_window(window, zones, calling_window.utcnow())
            if check.is_open:
                self.log.info(
                    "Calling window %s is open for %s (local time %s); dialling.",
                    window.describe(),
                    self.to_number,
                    check.describe_local_times(),
                )
                return
            if self.outside_window == "skip":
                message = (
                    f"Calling window {window.describe()} is closed for {self.to_number} (local time "
                    f"{check.describe_local_times()}); skipping the call as outside_window='skip' asks. "
                    f"The window next opens at {check.opens_at:%Y-%m-%d %H:%M:%S} UTC."
                )
                self.log.info("%s", message)
                raise AirflowSkipException(message)
            self.log.info(
                "Calling window %s is closed for %s (local time %s); waiting until %s UTC (local time %s).",
                window.describe(),
                self.to_number,
                check.describe_local_times(),
                f"{check.opens_at:%Y-%m-%d %H:%M:%S}",
                check.describe_local_times(check.opens_at),
            )
            if self.deferrable:
                from airflow.providers.standard.triggers.temporal import DateTimeTrigger

                self.defer(trigger=DateTimeTrigger(moment=check.opens_at), method_name="execute_after_window")
            time.sleep(max(0.0, (check.opens_at - calling_window.utcnow()).total_seconds()))

    def _place_call_once(self, context: Context) -> str:
        """Return the SID of this task instance's call, dialling only if no earlier try did."""
        # UNIX time the call was placed, when this try or a recorded earlier try placed it.
        self._placed_at: float | None = None
        store = context.get("task_state_store")
        ti = context["ti"]
        if store is None:
            if ti.try_number > 1 and not self.redial_on_retry:
                # Airflow before 3.3 stores nothing across tries that records whether try 1
                # dialled, even when its error showed that PolyAI queued nothing.
                raise AirflowFailException(
                    f"This is try {ti.try_number} of the call to {self.to_number}, and this Airflow "
                    "version (before 3.3) has no task state store to tell whether an earlier try "
                    "placed the call, so it was not dialled again. Read the first try's log: if it "
                    "failed before PolyAI accepted the call, run the task again with "
                    "redial_on_retry=True. Set retries=0 on this operator before Airflow 3.3, or "
                    "redial_on_retry=True where a second call is acceptable."
                )
            return self._hook().trigger_call(
                self.to_number, country_code=self.country_code, encryption=self.encryption, metadata=self.metadata
            )

        stored = store.get(CALL_RECORD_KEY) if not self.redial_on_retry else None
        # This operator stores only dicts under CALL_RECORD_KEY; the store's type is any JSON value.
        record: dict[str, Any] = stored if isinstance(stored, dict) else {}
        if record.get("call_sid"):
            self.log.info(
                "An earlier try already placed call %s to %s; not dialling again.",
                record["call_sid"],
                record.get("to_number"),
            )
            self._placed_at = record.get("placed_at")
            return record["call_sid"]
        if record:
            raise PolyAICallOutcomeUnknownError(
                f"An earlier try sent a trigger request to {record.get('to_number')} and its outcome is "
                "unknown, so PolyAI may have placed that call. Not dialling again; check with PolyAI, "
                "then clear this task with redial_on_retry=True if the person was not called."
            )

        # The connection is read before the record is written: a missing connection raises an Airflow
        # error outside the cleanup below and would leave a record that blocks every later try.
        hook = self._hook()
        hook.get_settings()
        store.set(CALL_RECORD_KEY, {"call_sid": None, "to_number": str(self.to_number)})
        try:
            call_sid = hook.trigger_call(
                self.to_number, country_code=self.country_code, encryption=self.encryption, metadata=self.metadata
            )
        except PolyAICallOutcomeUnknownError:
            raise
        except (PolyAIError, ValueError):
            # Every other error means PolyAI queued nothing, so a later try may dial safely.
            store.delete(CALL_RECORD_KEY)
            raise
        self._placed_at = time.time()
        store.set(
            CALL_RECORD_KEY, {"call_sid": call_sid, "to_number": str(self.to_number), "placed_at": self._placed_at}
        )
        return call_sid

    def _poll_until_terminal(self, call_sid: str, deadline: float) -> CallStatus:
        """Poll from this worker on PolyAI's schedule until the call ends or the deadline passes."""
        hook = self._hook()
        last_status: str | None = None
        while True:
            try:
                status = hook.get_call_status(call_sid)
            except PolyAITransientError as err:
                self.log.warning("Call %s: status poll failed, polling again later: %s", call_sid, err)
                status = None
            if status is not None and status.is_terminal:
                return status
            if status is not None and status.status != last_status:
                self.log.info("Call %s: %s -> %s", call_sid, last_status, status.status)
                last_status = status.status
            remaining = deadline - time.time()
            if remaining <= 0:
                raise AirflowSensorTimeout(
                    f"Call {call_sid} did not reach a terminal status within {self.wait_timeout:.0f} s; "
                    f"last status {last_status!r}."
                )
            interval = next_poll_interval(last_status or "", self.poke_interval, self.in_progress_poke_interval)
            time.sleep(min(interval, remaining))

    def _finish(self, context: Context, status: CallStatus) -> None:
        self.log.info("Call %s ended: %s (%s)", status.call_sid, status.status, status.reason or "no reason")
        push_outcome(context, status)
        # Pushed by hand because a task that fails below returns nothing; on success Airflow pushes
        # the same SID again from the return value.
        context["ti"].xcom_push(key="return_value", value=status.call_sid)
        raise_if_failure(status, self.failure_statuses)


def _calling_window_field(value: Any) -> Any:
    """Return the value stored for ``calling_window``: a dict, a template string or ``None``.

    A window is stored in its dict form, which DAG serialization and templating both handle. A dict
    holding Jinja templates, or a template string, is checked once rendered, in ``execute``.
    """
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and any(isinstance(item, str) and "{" in item for item in value.values()):
        return dict(value)
    return CallingWindow.from_value(value).to_dict()


def _rendered_calling_window(value: Any) -> CallingWindow | None:
    """Return the rendered ``calling_window`` as a window, reading a string as JSON or a Python dict."""
    if isinstance(value, str):
        text = value.strip()
        if text in ("", "None", "null"):
            return None
        try:
            value = json.loads(text)
        except ValueError:
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                raise PolyAIInvalidInputError(
                    f"calling_window rendered to {text!r}, which is not a dict. Render it as JSON with "
                    "'| tojson', or set render_template_as_native_obj=True on the DAG."
                ) from None
    if value is None:
        return None
    return CallingWindow.from_value(value)
