"""Hook for PolyAI's outbound calling API: trigger a call, read its status."""

from __future__ import annotations

import asyncio
import weakref
from typing import TYPE_CHECKING, Any

from tenacity import AsyncRetrying, RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_base, wait_random_exponential

from airflow.sdk import BaseHook

from airflow_provider_polyai.exceptions import (
    PolyAIAPIError,
    PolyAIAuthenticationError,
    PolyAICallNotFoundError,
    PolyAICallOutcomeUnknownError,
    PolyAIError,
    PolyAITransientError,
)
from airflow_provider_polyai.hooks.responses import error_for_response
from airflow_provider_polyai.hooks.settings import ConnectionSettings, settings_from_connection
from airflow_provider_polyai.models import CallStatus
from airflow_provider_polyai.validation import (
    normalize_country_code,
    normalize_phone_number,
    validate_call_sid,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    import aiohttp
    import requests

#: Paths of the primary generation; :mod:`~airflow_provider_polyai.hooks.generations` holds every
#: generation's paths, and the hook takes them from the connection's generation.
TRIGGER_PATH = "/outbound/trigger"
STATUS_PATH = "/outbound/status/{call_sid}"

# Well-formed but never issued: used by test_connection() to check the token without touching a real call.
PROBE_CALL_SID = "OUT-00000000-0000-0000-0000-000000000000"

# HTTP statuses after which PolyAI has certainly not queued a call: 429 is rejected before any work,
# and the API documents 500 on the trigger endpoint as "failed to queue". 503 comes from a proxy or
# the service refusing work. A 502 or 504 may hide a request the service did accept.
_TRIGGER_NOT_QUEUED_STATUSES = frozenset({429, 500, 503})

# One pooled aiohttp session per event loop, base URL and TLS setting, shared by every trigger in a
# triggerer process. Each hook that uses a session holds a lease on it; the last lease released closes
# it, so a short-lived event loop (``dag.test()``, tests) leaves no session open behind it.
_SESSIONS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, bool], _SharedSession]]
_SESSIONS = weakref.WeakKeyDictionary()


class _SharedSession:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.leases = 0

#: Most connections one shared async session keeps open to one base URL.
ASYNC_POOL_SIZE = 64


class _RetryAfterOrBackoff(wait_base):
    """Wait what a 429 or 5xx asked for in ``Retry-After``, else back off exponentially with jitter.

    Either wait is capped at ``max_wait``, so a server asking for minutes cannot stall a poke.
    """

    def __init__(self, min_wait: float, max_wait: float) -> None:
        self._max_wait = max_wait
        self._backoff = wait_random_exponential(multiplier=min_wait, max=max_wait)

    def __call__(self, retry_state: RetryCallState) -> float:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(error, PolyAITransientError) and error.retry_after is not None:
            return min(error.retry_after, self._max_wait)
        return self._backoff(retry_state)


async def _lease_shared_session(settings: ConnectionSettings) -> aiohttp.ClientSession:
    import aiohttp

    sessions = _SESSIONS.setdefault(asyncio.get_running_loop(), {})
    key = (settings.base_url, settings.verify_ssl)
    shared = sessions.get(key)
    if shared is None or shared.session.closed:
        # ssl=True verifies certificates with the default context; False turns verification off.
        connector = aiohttp.TCPConnector(limit=ASYNC_POOL_SIZE, ssl=settings.verify_ssl)
        shared = _SharedSession(aiohttp.ClientSession(base_url=settings.base_url, connector=connector))
        sessions[key] = shared
    shared.leases += 1
    return shared.session


async def _release_shared_session(settings: ConnectionSettings) -> None:
    sessions = _SESSIONS.get(asyncio.get_running_loop(), {})
    key = (settings.base_url, settings.verify_ssl)
    shared = sessions.get(key)
    if shared is None:
        return
    shared.leases -= 1
    if shared.leases <= 0:
        del sessions[key]
        await shared.session.close()


class PolyAIHook(BaseHook):
    """Interact with PolyAI's outbound calling API.

    The connection's host is the API base URL (empty means the US region,
    ``https://api.us-1.platform.polyai.app``) and its password the connector token. The extra field
    ``api_generation`` picks the API generation (``outbound``, the default, ``v1`` or ``agents``; see
    :mod:`~airflow_provider_polyai.hooks.generations`); every method works the same for each. Requests that fail
    with HTTP 429, 5xx, a connection error or a timeout are retried with exponential backoff, except a
    trigger request that PolyAI may already have accepted: see :meth:`trigger_call`.

    :param polyai_conn_id: id of the ``polyai`` connection.
    :param max_attempts: requests made at most for one operation, the first included.
    :param retry_min_wait: base of the exponential backoff between attempts, in seconds.
    :param retry_max_wait: longest wait between two attempts, in seconds.
    """

    conn_name_attr = "polyai_conn_id"
    default_conn_name = "polyai_default"
    conn_type = "polyai"
    hook_name = "PolyAI"

    def __init__(
        self,
        polyai_conn_id: str = default_conn_name,
        *,
        max_attempts: int = 5,
        retry_min_wait: float = 1.0,
        retry_max_wait: float = 30.0,
    ) -> None:
        super().__init__()
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}.")
        self.polyai_conn_id = polyai_conn_id
        self.max_attempts = max_attempts
        self.retry_min_wait = retry_min_wait
        self.retry_max_wait = retry_max_wait
        self._settings: ConnectionSettings | None = None
        self._session: requests.Session | None = None
        self._async_session: aiohttp.ClientSession | None = None
        self._async_request_options: tuple[dict[str, str], aiohttp.ClientTimeout] | None = None

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Return the connection form's extra fields, for Airflow versions before 3.2.

        Those versions build the form from WTForms fields; WTForms is imported here, and only if the
        deployment has it (the FAB provider brings it), because the provider does not need it. Without
        WTForms, Airflow logs that the form widgets are missing and shows the standard fields.
        """
        from wtforms import BooleanField, StringField

        from airflow_provider_polyai.get_provider_info import CONNECTION_FIELDS

        timeout = CONNECTION_FIELDS["timeout"]
        verify_ssl = CONNECTION_FIELDS["verify_ssl"]
        allow_insecure_http = CONNECTION_FIELDS["allow_insecure_http"]
        return {
            "timeout": StringField(
                timeout["label"],
                description=timeout["description"],
                default=str(timeout["schema"]["default"]),
            ),
            "verify_ssl": BooleanField(
                verify_ssl["label"],
                description=verify_ssl["description"],
                default=verify_ssl["schema"]["default"],
            ),
            "allow_insecure_http": BooleanField(
                allow_insecure_http["label"],
                description=allow_insecure_http["description"],
                default=allow_insecure_http["schema"]["default"],
            ),
            # The API generation fields are free text here; the hook validates them when it reads the
            # connection and names the allowed values.
            **{
                name: StringField(
                    CONNECTION_FIELDS[name]["label"],
                    description=CONNECTION_FIELDS[name]["description"],
                )
                for name in ("api_generation", "agent_id", "environment", "variant_id")
            },
        }

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Return the connection form's field behaviour, for Airflow versions before 3.2."""
        from airflow_provider_polyai.get_provider_info import FIELD_BEHAVIOUR

        return {
            "hidden_fields": FIELD_BEHAVIOUR["hidden-fields"],
            "relabeling": FIELD_BEHAVIOUR["relabeling"],
            "placeholders": FIELD_BEHAVIOUR["placeholders"],
        }

    # -- connection -------------------------------------------------------------------------------

    def get_settings(self) -> ConnectionSettings:
        """Read and validate the connection once; later calls reuse the result."""
        if self._settings is None:
            self._settings = settings_from_connection(self.get_connection(self.polyai_conn_id))
        return self._settings

    async def aget_settings(self) -> ConnectionSettings:
        """Read the connection without blocking the event loop; later calls reuse the result."""
        if self._settings is None:
            conn = await self.aget_connection(self.polyai_conn_id)
            self._settings = settings_from_connection(conn)
        return self._settings

    def get_conn(self) -> requests.Session:
        """Return the ``requests`` session this hook sends its requests with."""
        if self._session is None:
            import requests

            session = requests.Session()
            session.verify = self.get_settings().verify_ssl
            self._session = session
        return self._session

    def _retrying(self, retry_on: type[BaseException] | tuple[type[BaseException], ...]) -> dict[str, Any]:
        return {
            "retry": retry_if_exception_type(retry_on),
            "stop": stop_after_attempt(self.max_attempts),
            "wait": _RetryAfterOrBackoff(self.retry_min_wait, self.retry_max_wait),
            "before_sleep": self._log_retry,
            "reraise": True,
        }

    def _log_retry(self, retry_state: RetryCallState) -> None:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        wait = retry_state.next_action.sleep if retry_state.next_action else 0.0
        self.log.warning(
            "PolyAI request failed (attempt %d of %d), retrying in %.1f s: %s",
            retry_state.attempt_number,
            self.max_attempts,
            wait,
            error,
        )

    # -- sync requests ----------------------------------------------------------------------------

    def _send(self, method: str, path: str, *, subject: str, json_body: dict | None = None) -> str:
        """Send one request and return the body of a 2xx response; raise the classified error otherwise.

        Transport failures are raised as :class:`PolyAITransientError` with ``request_sent`` telling
        whether the request could have reached the server.
        """
        import requests

        settings = self.get_settings()
        try:
            response = self.get_conn().request(
                method,
                settings.base_url + path,
                json=json_body,
                headers=settings.headers,
                timeout=settings.timeout,
            )
        except (requests.exceptions.ConnectTimeout, requests.exceptions.SSLError) as err:
            raise _transport_error(subject, err, request_sent=False) from None
        except requests.exceptions.ConnectionError as err:
            raise _transport_error(subject, err, request_sent=not _is_connect_failure(err)) from None
        except requests.exceptions.RequestException as err:
            raise _transport_error(subject, err, request_sent=True) from None

        body = response.text
        if response.ok:
            return body
        raise error_for_response(
            response.status_code,
            body,
            content_type=response.headers.get("Content-Type", ""),
            retry_after=response.headers.get("Retry-After"),
            subject=subject,
            conn_id=self.polyai_conn_id,
            describe=self._error_describer(settings, subject, trigger=method == "POST"),
        )

    def _error_describer(
        self, settings: ConnectionSettings, subject: str, *, trigger: bool
    ) -> Callable[[int, str], str | None]:
        """Return the callback that words an HTTP error the way the connection's generation needs."""

        def describe(status_code: int, detail: str) -> str | None:
            return settings.generation.describe_error(
                status_code, detail, subject=subject, conn_id=self.polyai_conn_id, settings=settings, trigger=trigger
            )

        return describe

    def trigger_call(
        self,
        to_number: str,
        *,
        country_code: str | None = None,
        encryption: str | None = None,
        metadata: dict[str, Any] | str | None = None,
    ) -> str:
        """Place an outbound call and return its call SID.

        Every argument is checked before anything is sent. A request is sent again only when
        PolyAI certainly did not queue the call: a failed connection attempt, HTTP 429, 500 or 503.
        When the request may have been accepted (a read timeout, a reset connection, HTTP 502 or
        504, or a 200 without a SID), :class:`PolyAICallOutcomeUnknownError` is raised instead,
        because sending it again could ring the person twice.

        :param to_number: number to call, in E.164 form unless ``country_code`` is given.
        :param country_code: ISO 3166-1 alpha-2 region, also used to read a national ``to_number``.
        :param encryption: ``TLS/SRTP`` (PolyAI's default) or ``UDP/RTP``; the ``v1`` and ``agents``
            generations also accept ``UDP/SRTP`` and ``TLS/RTP``.
        :param metadata: JSON object passed to the agent as ``conv.integration_attributes``; the
            ``v1`` and ``agents`` generations send it as SIP headers and accept only string values.
        """
        region = normalize_country_code(country_code)
        number = normalize_phone_number(to_number, region)
        settings = self.get_settings()
        generation = settings.generation
        body = generation.trigger_body(
            settings, number, region, generation.check_encryption(encryption), generation.check_metadata(metadata)
        )
        path = generation.trigger_path(settings)
        subject = f"the call to {number}"

        def send_once() -> str:
            try:
                response_body = self._send("POST", path, subject=subject, json_body=body)
            except PolyAICallNotFoundError as err:
                if generation.name == "outbound":
                    raise
                # A 404 from a newer generation's trigger endpoint is about its set-up, not a call.
                raise PolyAIAPIError(str(err), status_code=404, error=err.error, code=err.code) from None
            except PolyAITransientError as err:
                if err.request_sent and err.status_code not in _TRIGGER_NOT_QUEUED_STATUSES:
                    raise PolyAICallOutcomeUnknownError(
                        f"The trigger request for {subject} failed after it may have reached PolyAI "
                        f"({str(err).rstrip('.')}). The call may have been placed, so it was not sent again. Check the "
                        "call with PolyAI before retrying this task."
                    ) from None
                raise
            try:
                return generation.parse_call_sid(response_body, subject=subject)
            except PolyAITransientError as err:
                raise PolyAICallOutcomeUnknownError(
                    f"{err} The call may have been placed, so it was not sent again."
                ) from None

        call_sid = Retrying(**self._retrying(PolyAITransientError))(send_once)
        self.log.info("Placed call %s to %s", call_sid, number)
        return call_sid

    def get_call_status(self, call_sid: str) -> CallStatus:
        """Return the current status of a call, retrying transient failures."""
        validate_call_sid(call_sid)
        settings = self.get_settings()
        generation = settings.generation
        path = generation.status_path(settings, call_sid)

        def fetch_once() -> CallStatus:
            return generation.parse_call_status(call_sid, self._send("GET", path, subject=f"call {call_sid}"))

        return Retrying(**self._retrying(PolyAITransientError))(fetch_once)

    def test_connection(self) -> tuple[bool, str]:
        """Check the base URL and connector token, for the Connections UI's Test button.

        PolyAI has no endpoint that only checks a token, so this reads the status of a SID that is
        never issued: HTTP 404 means the token was accepted and the call is unknown, as expected.
        """
        try:
            credential = self.get_settings().generation.credential_name
            self.get_call_status(PROBE_CALL_SID)
        except PolyAICallNotFoundError:
            return True, f"Connected to {self.get_settings().base_url}: the {credential} was accepted."
        except PolyAIAuthenticationError as err:
            return False, f"The {credential} was rejected: {err}"
        except PolyAIError as err:
            return False, str(err)
        return True, f"Connected to {self.get_settings().base_url}."

    # -- async requests, for triggers ---------------------------------------------------------------

    async def aget_call_status(self, call_sid: str, *, max_attempts: int | None = None) -> CallStatus:
        """Return the current status of a call without blocking the event loop.

        :param max_attempts: requests made at most; defaults to the hook's ``max_attempts``. Triggers
            pass 1 and schedule their own retries so that no wait outlives their deadline.
        """
        import aiohttp

        validate_call_sid(call_sid)
        settings = await self.aget_settings()
        if self._async_session is None or self._async_session.closed:
            self._async_session = await _lease_shared_session(settings)
        session = self._async_session
        # A triggerer polls thousands of calls from one event loop, so the per-poll constants are
        # built once per hook rather than on every poll.
        if self._async_request_options is None:
            self._async_request_options = (settings.headers, aiohttp.ClientTimeout(total=settings.timeout))
        headers, timeout = self._async_request_options
        generation = settings.generation
        path = generation.status_path(settings, call_sid)

        async def fetch_once() -> CallStatus:
            subject = f"call {call_sid}"
            try:
                async with session.get(path, headers=headers, timeout=timeout) as response:
                    body = await response.text()
                    if response.status >= 300:
                        raise error_for_response(
                            response.status,
                            body,
                            content_type=response.headers.get("Content-Type", ""),
                            retry_after=response.headers.get("Retry-After"),
                            subject=subject,
                            conn_id=self.polyai_conn_id,
                            describe=self._error_describer(settings, subject, trigger=False),
                        )
            except (aiohttp.ClientError, asyncio.TimeoutError) as err:
                raise _transport_error(subject, err, request_sent=True) from None
            return generation.parse_call_status(call_sid, body)

        attempts = self.max_attempts if max_attempts is None else max_attempts
        if attempts == 1:
            # Triggers schedule their own retries; building a tenacity retrier per poll would cost
            # more CPU than the request itself.
            return await fetch_once()
        retrying = AsyncRetrying(**{**self._retrying(PolyAITransientError), "stop": stop_after_attempt(attempts)})
        return await retrying(fetch_once)

    async def aclose(self) -> None:
        """Release this hook's share of the pooled async session; the last user closes it."""
        if self._async_session is not None and self._settings is not None:
            self._async_session = None
            await _release_shared_session(self._settings)


def _is_connect_failure(err: BaseException) -> bool:
    """Return whether a ``requests`` connection error happened before the request was sent."""
    from urllib3.exceptions import NewConnectionError

    # requests wraps urllib3's MaxRetryError, whose ``reason`` is the error that ended the attempt.
    cause: object = err.args[0] if err.args else None
    reason = getattr(cause, "reason", cause)
    return isinstance(reason, NewConnectionError)


def _transport_error(subject: str, err: BaseException, *, request_sent: bool) -> PolyAITransientError:
    detail = str(err) or "no details"
    return PolyAITransientError(
        f"Request for {subject} failed: {type(err).__name__}: {detail}", request_sent=request_sent
    )
