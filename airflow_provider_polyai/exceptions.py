"""Errors raised by the PolyAI provider.

Every error message names the value that failed and what to do next. None of them ever contains
the connector token.
"""

from __future__ import annotations

from airflow_provider_polyai.version_compat import AirflowException, AirflowFailException


class PolyAIError(AirflowException):
    """Base class for every error this provider raises."""


class PolyAIInvalidInputError(PolyAIError, AirflowFailException, ValueError):
    """A call SID, phone number, metadata or connection setting is invalid; nothing was sent.

    It fails the task without retries, because a retry would send the same value again.
    """


class PolyAIAPIError(PolyAIError, AirflowFailException):
    """PolyAI answered with an HTTP error that retrying cannot fix (400, 401, 403 or 404).

    It fails the task without retries: a revoked token or an unknown SID stays so.

    :param status_code: HTTP status of the response.
    :param error: the server's ``error`` message, if the body had one.
    :param code: the server's ``code``, if the body had one.
    """

    def __init__(self, message: str, *, status_code: int, error: str = "", code: str = "") -> None:
        super().__init__(message)
        # AirflowException.status_code is typed HTTPStatus, inferred from its class default, though it
        # is any HTTP status code. Here it is PolyAI's response status, which HTTPStatus may not list.
        self.status_code = status_code  # type: ignore[assignment]
        self.error = error
        self.code = code


class PolyAIAuthenticationError(PolyAIAPIError):
    """The connector token was rejected (HTTP 401 or 403)."""


class PolyAICallNotFoundError(PolyAIAPIError):
    """The call SID is unknown to this connector (HTTP 404)."""


class PolyAITransientError(PolyAIError):
    """A failure that may pass: HTTP 429 or 5xx, a connection error or a timeout.

    :param status_code: HTTP status of the response; ``None`` when no response arrived.
    :param retry_after: seconds the server asked the client to wait (``Retry-After``), if it said.
    :param request_sent: whether the request may have reached the server. ``False`` only when the
        connection could not be opened, which makes resending a trigger request safe.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        retry_after: float | None = None,
        request_sent: bool = True,
    ) -> None:
        super().__init__(message)
        # None when no response arrived; see PolyAIAPIError for why the type check is silenced.
        self.status_code = status_code  # type: ignore[assignment]
        self.retry_after = retry_after
        self.request_sent = request_sent


class PolyAICallOutcomeUnknownError(PolyAIError, AirflowFailException):
    """A trigger request failed after it may have reached PolyAI, so the call may have been placed.

    The provider never resends such a request on its own, because a second request would ring the
    person twice, and the task fails without retries for the same reason.
    """
