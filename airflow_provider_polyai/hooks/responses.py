"""Reading PolyAI responses into values or errors, shared by the sync and async hook paths.

Nothing here touches the network, so both HTTP clients classify a response the same way.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Callable
from typing import Any

from airflow_provider_polyai.exceptions import (
    PolyAIAPIError,
    PolyAIAuthenticationError,
    PolyAICallNotFoundError,
    PolyAIError,
    PolyAITransientError,
)
from airflow_provider_polyai.models import DEFAULT_API_GENERATION, CallStatus

#: Longest ``Retry-After`` honoured, in seconds; a longer one is cut to this so a wait stays bounded.
MAX_RETRY_AFTER_SECONDS = 300.0


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Return the wait a ``Retry-After`` header asks for, in seconds, or ``None`` if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def _error_fields(body: str) -> tuple[str, str]:
    try:
        data = json.loads(body)
    except ValueError:
        return "", ""
    if not isinstance(data, dict):
        return "", ""
    # The primary API sends "error"/"code"; the newer generations send "error_message"/"error_code".
    error = data.get("error") or data.get("error_message") or ""
    code = data.get("code") or data.get("error_code") or ""
    return str(error)[:300], str(code)[:100]


def _error_id(body: str) -> str:
    # The Agents API puts its request id in "error_id"; PolyAI support asks for it.
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    error_id = data.get("error_id") if isinstance(data, dict) else None
    return str(error_id)[:100] if error_id else ""


def _describe_server_error(status_code: int, body: str, content_type: str) -> str:
    error, code = _error_fields(body)
    if error or code:
        error_id = _error_id(body)
        if error_id:
            return f"HTTP {status_code}, code {code or '-'}, error id {error_id}: {error or 'no message'}"
        return f"HTTP {status_code}, code {code or '-'}: {error or 'no message'}"
    # Proxies return HTML pages, and their size and type are enough to recognise them in a log.
    return f"HTTP {status_code}, {content_type or 'no content type'} body of {len(body)} characters"


def error_for_response(
    status_code: int,
    body: str,
    *,
    content_type: str = "",
    retry_after: str | None = None,
    subject: str,
    conn_id: str,
    describe: Callable[[int, str], str | None] | None = None,
) -> PolyAIError:
    """Return the error for a non-2xx response.

    :param subject: what the request was about, as it reads in a message: ``call OUT-…`` or
        ``the call to +44…``.
    :param conn_id: the connection used, named in authentication errors.
    :param describe: called with the HTTP status and the formatted server detail for a 400, 401,
        403 or 404; returns the message of an API generation that words the error differently, or
        ``None`` to keep the default message.
    """
    detail = _describe_server_error(status_code, body, content_type)
    error, code = _error_fields(body)
    message = describe(status_code, detail) if describe is not None and status_code in (400, 401, 403, 404) else None
    if status_code == 429:
        wait = parse_retry_after(retry_after)
        hint = f"it asked to wait {wait:.0f} s" if wait is not None else "no Retry-After given"
        return PolyAITransientError(
            f"PolyAI rate-limited the request for {subject} ({detail}; {hint}).",
            status_code=429,
            retry_after=wait,
        )
    if status_code >= 500:
        return PolyAITransientError(
            f"PolyAI returned a server error for the request for {subject} ({detail}).",
            status_code=status_code,
            retry_after=parse_retry_after(retry_after),
        )
    if status_code in (401, 403):
        return PolyAIAuthenticationError(
            message
            or f"PolyAI rejected the connector token of connection {conn_id!r} for {subject} ({detail}). "
            "Check that the token in the connection's Connector token field is current and belongs "
            "to this project.",
            status_code=status_code,
            error=error,
            code=code,
        )
    if status_code == 404:
        return PolyAICallNotFoundError(
            message
            or f"PolyAI has no record of {subject} ({detail}): the SID is unknown to this connector, was "
            "placed with another connector, or is past PolyAI's retention period (30 days after the "
            "call ended). Check the SID and the connection.",
            status_code=status_code,
            error=error,
            code=code,
        )
    if status_code == 400:
        return PolyAIAPIError(
            message
            or f"PolyAI rejected the request for {subject} as invalid ({detail}). "
            "Fix the value the server names; retrying sends the same request.",
            status_code=status_code,
            error=error,
            code=code,
        )
    return PolyAIAPIError(
        f"PolyAI returned an unexpected error for the request for {subject} ({detail}).",
        status_code=status_code,
        error=error,
        code=code,
    )


def _json_object(body: str, subject: str) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError as err:
        raise PolyAITransientError(
            f"PolyAI sent a response for {subject} that is not JSON ({len(body)} characters): {err}."
        ) from err
    if not isinstance(data, dict):
        raise PolyAITransientError(
            f"PolyAI sent a response for {subject} that is JSON but not an object: {type(data).__name__}."
        )
    return data


def parse_call_sid(body: str, *, subject: str, field: str = "call_sid") -> str:
    """Return the call SID from a successful trigger response, or raise if there is none.

    :param field: the response field holding the SID; the Agents API names it ``callSid``.
    """
    data = _json_object(body, subject)
    call_sid = data.get(field)
    if not isinstance(call_sid, str) or not call_sid:
        raise PolyAITransientError(f"PolyAI accepted {subject} but the response has no {field}.")
    return call_sid


def parse_call_status(call_sid: str, body: str, *, generation: str = DEFAULT_API_GENERATION) -> CallStatus:
    """Return the :class:`CallStatus` in a successful status response, or raise if it is malformed.

    A malformed body raises :class:`PolyAITransientError`: the next poll is likely to read it whole.
    """
    data = _json_object(body, f"call {call_sid}")
    status = data.get("status")
    if not isinstance(status, str) or not status:
        raise PolyAITransientError(f"PolyAI sent a status response for call {call_sid} without a status.")
    reason = data.get("reason")
    return CallStatus(
        call_sid=call_sid, status=status, reason=reason if isinstance(reason, str) else "", generation=generation
    )
