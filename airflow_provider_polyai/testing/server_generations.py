"""The local PolyAI server's routes for the ``v1`` and ``agents`` API generations.

``create_app`` in :mod:`airflow_provider_polyai.testing.server` mounts them next to the primary
generation's routes, on the same state: the same calls, scripted outcomes, faults, request log and
``/_local/`` admin routes. A call is only found through the generation that placed it.

What each generation does here, as its API reference describes it:

``v1``
    ``POST /v1/outbound-calling`` and ``GET /v1/outbound-calling/{call_sid}/status``, header
    ``X-PolyAi-Auth-Token``, error body ``{"error", "code"}``. Statuses ``queued``, ``calling``,
    ``success``, ``failure``; the reason is empty except on failure.
``agents``
    ``POST /v1/agents/{agent_id}/telephony/outbound-calls`` (body ``toNumber``, ``environment``,
    ``countryCode``, ``variantId``, ``encryption``, ``metadata``) and
    ``GET .../outbound-calls/{call_sid}/status?environment=``, header ``X-API-KEY``, error body
    ``{"success", "error", "error_id", "error_code", "error_message", "data"}``. Statuses
    ``QUEUED``, ``CALLING``, ``SUCCESS``, ``FAILURE``. A key added with ``/_local/forbid-token``
    gets 403; ``/_local/agent-environments`` (``{"agent": ["live"]}``) limits where each agent has
    an outbound connector, and a trigger elsewhere gets 404.

Both keep a call's status for :data:`RETENTION_SECONDS` of server time after the call ends, then
respond with 404, as PolyAI documents for these generations. Each call moves through the same scenario as
on the primary generation (chosen by the number's last digit or scripted), with its statuses
translated: ``ringing`` and ``in-progress`` become ``calling``, ``completed`` becomes ``success``
and every other terminal status ``failure`` with the scenario's reason.
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from typing import Any

import phonenumbers
from aiohttp import web

from airflow_provider_polyai.testing.scenarios import CallScenario
from airflow_provider_polyai.testing.server import (
    METADATA_MAX_BASE64_BYTES,
    STATE_KEY,
    PlacedCall,
    PolyAIServerState,
    _error,
    _serve_fault,
)

V1_TOKEN_HEADER = "X-PolyAi-Auth-Token"
AGENTS_TOKEN_HEADER = "X-API-KEY"
V1_ENCRYPTIONS = ("UDP/RTP", "UDP/SRTP", "TLS/RTP", "TLS/SRTP")
AGENTS_ENCRYPTIONS = ("udp_rtp", "udp_srtp", "tls_rtp", "tls_srtp")
AGENTS_ENVIRONMENTS = ("sandbox", "pre-release", "live")

#: Seconds of server time a newer generation keeps a call's status after the call ends.
RETENTION_SECONDS = 2 * 3600.0

_SID_PATTERN = re.compile(r"OUT-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

# Primary-generation statuses of a scenario, as the v1 generation reports them. A status missing
# here (a scripted undocumented one, or one already in v1's words) is reported unchanged.
_V1_STATUS = {
    "queued": "queued",
    "ringing": "calling",
    "in-progress": "calling",
    "completed": "success",
    "failed": "failure",
    "no-answer": "failure",
    "busy": "failure",
    "cancelled": "failure",
}
_AGENTS_STATUS = {primary: v1.upper() for primary, v1 in _V1_STATUS.items()}


def agents_error(status: int, code: str, message: str) -> web.Response:
    """Return an error response in the Agents API's envelope."""
    body = {
        "success": False,
        "error": message,
        "error_id": str(uuid.uuid4()),
        "error_code": code,
        "error_message": message,
        "data": None,
    }
    return web.json_response(body, status=status)


def translate_status(generation: str, status: str, reason: str) -> tuple[str, str]:
    """Return a scenario's primary-generation status and reason as ``generation`` reports them."""
    table = _V1_STATUS if generation == "v1" else _AGENTS_STATUS
    translated = table.get(status, status)
    if translated in ("success", "SUCCESS"):
        # Both generations document the reason as filled in for failures only.
        return translated, ""
    return translated, reason


def _scenario_seconds(scenario: CallScenario) -> float:
    """Return how long a scenario lasts, in server seconds, until its terminal status."""
    total = scenario.queued_seconds + scenario.ringing_seconds
    return total + scenario.in_progress_seconds if scenario.connects else total


def _is_expired(state: PolyAIServerState, call: PlacedCall) -> bool:
    elapsed = (time.monotonic() - call.placed_at) * state.time_scale
    return elapsed > _scenario_seconds(call.scenario) + RETENTION_SECONDS


def _check_key(
    state: PolyAIServerState, request: web.Request, header: str, error_body: Any
) -> web.Response | None:
    token = request.headers.get(header)
    if not token:
        return error_body(401, "UNAUTHORIZED", f"missing {header} header")
    if token not in state.tokens or token in state.revoked_tokens:
        return error_body(401, "UNAUTHORIZED", "invalid credentials")
    if token in state.forbidden_tokens:
        return error_body(403, "FORBIDDEN", "insufficient permissions")
    return None


def _check_number(
    to_number: Any, country_code: Any, names: tuple[str, str], error_body: Any
) -> tuple[str | None, web.Response | None]:
    """Return the E.164 form of a number, or the 400 response; ``names`` are the body's field names."""
    number_field, country_field = names
    if country_code is not None and (
        not isinstance(country_code, str) or country_code not in phonenumbers.SUPPORTED_REGIONS
    ):
        return None, error_body(400, "INVALID_COUNTRY_CODE", f"invalid {country_field} {country_code!r}")
    if not isinstance(to_number, str) or not to_number:
        return None, error_body(400, "INVALID_NUMBER", f"{number_field} is required")
    try:
        parsed = phonenumbers.parse(to_number, country_code)
    except phonenumbers.NumberParseException:
        return None, error_body(400, "INVALID_NUMBER", f"{number_field} {to_number!r} is not a phone number")
    if not phonenumbers.is_valid_number(parsed):
        return None, error_body(400, "INVALID_NUMBER", f"{number_field} {to_number!r} is not a valid number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164), None


def _check_string_metadata(metadata: Any, error_body: Any) -> web.Response | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        return error_body(400, "INVALID_METADATA", "metadata must be a JSON object")
    if not all(isinstance(value, str) for value in metadata.values()):
        return error_body(400, "INVALID_METADATA", "metadata values must be strings")
    size = len(base64.b64encode(json.dumps(metadata, separators=(",", ":")).encode()))
    if size >= METADATA_MAX_BASE64_BYTES:
        return error_body(400, "METADATA_TOO_LARGE", f"metadata is {size} bytes base64-encoded")
    return None


async def _read_json(request: web.Request, error_body: Any) -> tuple[Any, web.Response | None]:
    try:
        return await request.json(), None
    except ValueError:
        return None, error_body(400, "INVALID_REQUEST", "request body is not valid JSON")


def _log(state: PolyAIServerState, request: web.Request, generation: str, call_sid: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "time": time.time(),
        "method": request.method,
        "path": request.path,
        "call_sid": call_sid,
        "generation": generation,
    }
    state.requests.append(entry)
    return entry


async def _place(
    request: web.Request, entry: dict[str, Any], call: PlacedCall, response_body: dict[str, Any], error_body: Any
) -> web.StreamResponse:
    """Record ``call`` and respond with ``response_body``, or with the fault planned for its number."""
    state = request.app[STATE_KEY]
    entry["to_number"] = call.to_number
    fault = state.faults.next_fault("trigger", None, call.to_number)
    if fault is not None:
        entry["fault"] = fault
        # A slow response still places the call, as a real server that answers late would.
        if fault.startswith("slow:"):
            state.calls[call.call_sid] = call
            entry["call_sid"] = call.call_sid
        return await _serve_fault(request, fault, response_body, error_body)
    state.calls[call.call_sid] = call
    entry["call_sid"] = call.call_sid
    entry["status"] = 200
    return web.json_response(response_body)


async def _answer_status(
    request: web.Request, entry: dict[str, Any], call: PlacedCall, body: dict[str, Any], error_body: Any
) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    entry["call_status"] = body["status"]
    fault = state.faults.next_fault("status", call.call_sid, call.to_number)
    if fault is not None:
        entry["fault"] = fault
        return await _serve_fault(request, fault, body, error_body)
    entry["status"] = 200
    return web.json_response(body)


def _reject(entry: dict[str, Any], response: web.Response) -> web.Response:
    entry["status"] = response.status
    return response


# -- v1 ---------------------------------------------------------------------------------------------


async def handle_v1_trigger(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    entry = _log(state, request, "v1", None)
    if (denied := _check_key(state, request, V1_TOKEN_HEADER, _error)) is not None:
        return _reject(entry, denied)
    body, invalid = await _read_json(request, _error)
    if invalid is not None:
        return _reject(entry, invalid)
    if not isinstance(body, dict):
        return _reject(entry, _error(400, "INVALID_REQUEST", "request body must be a JSON object"))
    number, invalid = _check_number(
        body.get("to_number"), body.get("country_code"), ("to_number", "country_code"), _error
    )
    if invalid is not None:
        return _reject(entry, invalid)
    encryption = body.get("encryption", "TLS/SRTP")
    if encryption not in V1_ENCRYPTIONS:
        return _reject(entry, _error(400, "INVALID_ENCRYPTION", f"encryption must be one of {list(V1_ENCRYPTIONS)}"))
    if (invalid := _check_string_metadata(body.get("metadata"), _error)) is not None:
        return _reject(entry, invalid)

    assert number is not None
    call_sid = f"OUT-{uuid.uuid4()}"
    call = PlacedCall(
        call_sid,
        number,
        time.monotonic(),
        state.scenario_for(number),
        body.get("metadata"),
        country_code=body.get("country_code") or "",
        encryption=encryption,
        generation="v1",
    )
    return await _place(request, entry, call, {"call_sid": call_sid}, _error)


async def handle_v1_status(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    call_sid = request.match_info["call_sid"]
    entry = _log(state, request, "v1", call_sid)
    if (denied := _check_key(state, request, V1_TOKEN_HEADER, _error)) is not None:
        return _reject(entry, denied)
    if not _SID_PATTERN.fullmatch(call_sid):
        return _reject(entry, _error(400, "INVALID_CALL_SID", f"invalid call SID format: {call_sid!r}"))
    call = state.calls.get(call_sid)
    if call is None or call.generation != "v1" or call_sid in state.forgotten_sids or _is_expired(state, call):
        return _reject(entry, _error(404, "NOT_FOUND", "call SID not found or status data expired"))
    status, reason = translate_status("v1", *state.status_of(call))
    return await _answer_status(request, entry, call, {"status": status, "reason": reason}, _error)


# -- Agents API -------------------------------------------------------------------------------------


async def handle_agents_trigger(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    agent_id = request.match_info["agent_id"]
    entry = _log(state, request, "agents", None)
    if (denied := _check_key(state, request, AGENTS_TOKEN_HEADER, agents_error)) is not None:
        return _reject(entry, denied)
    body, invalid = await _read_json(request, agents_error)
    if invalid is not None:
        return _reject(entry, invalid)
    if not isinstance(body, dict):
        return _reject(entry, agents_error(400, "INVALID_REQUEST", "request body must be a JSON object"))
    environment = body.get("environment")
    if environment not in AGENTS_ENVIRONMENTS:
        message = f"environment must be one of {list(AGENTS_ENVIRONMENTS)}, got {environment!r}"
        return _reject(entry, agents_error(400, "INVALID_ENVIRONMENT", message))
    number, invalid = _check_number(
        body.get("toNumber"), body.get("countryCode"), ("toNumber", "countryCode"), agents_error
    )
    if invalid is not None:
        return _reject(entry, invalid)
    encryption = body.get("encryption", "tls_srtp")
    if encryption not in AGENTS_ENCRYPTIONS:
        message = f"encryption must be one of {list(AGENTS_ENCRYPTIONS)}"
        return _reject(entry, agents_error(400, "INVALID_ENCRYPTION", message))
    variant_id = body.get("variantId")
    if variant_id is not None and (not isinstance(variant_id, str) or not variant_id):
        return _reject(entry, agents_error(400, "INVALID_VARIANT", "variantId must be a non-empty string"))
    if (invalid := _check_string_metadata(body.get("metadata"), agents_error)) is not None:
        return _reject(entry, invalid)
    connectors = state.agent_environments
    if connectors is not None and environment not in connectors.get(agent_id, set()):
        message = f"no connector found for agent {agent_id!r} in environment {environment!r}"
        return _reject(entry, agents_error(404, "CONNECTOR_NOT_FOUND", message))

    assert number is not None
    call_sid = f"OUT-{uuid.uuid4()}"
    call = PlacedCall(
        call_sid,
        number,
        time.monotonic(),
        state.scenario_for(number),
        body.get("metadata"),
        country_code=body.get("countryCode") or "",
        encryption=encryption,
        generation="agents",
        agent_id=agent_id,
        environment=environment,
        variant_id=variant_id,
    )
    return await _place(request, entry, call, {"callSid": call_sid, "status": "QUEUED"}, agents_error)


async def handle_agents_status(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    agent_id = request.match_info["agent_id"]
    call_sid = request.match_info["call_sid"]
    entry = _log(state, request, "agents", call_sid)
    if (denied := _check_key(state, request, AGENTS_TOKEN_HEADER, agents_error)) is not None:
        return _reject(entry, denied)
    environment = request.query.get("environment")
    if not environment:
        return _reject(entry, agents_error(400, "MISSING_ENVIRONMENT", "query parameter environment is required"))
    if environment not in AGENTS_ENVIRONMENTS:
        message = f"environment must be one of {list(AGENTS_ENVIRONMENTS)}, got {environment!r}"
        return _reject(entry, agents_error(400, "INVALID_ENVIRONMENT", message))
    if not _SID_PATTERN.fullmatch(call_sid):
        return _reject(entry, agents_error(400, "INVALID_CALL_SID", f"invalid call SID: {call_sid!r}"))
    call = state.calls.get(call_sid)
    # A call placed by another agent or in another environment is invisible here, as it is on PolyAI.
    if (
        call is None
        or call.generation != "agents"
        or call.agent_id != agent_id
        or call.environment != environment
        or call_sid in state.forgotten_sids
        or _is_expired(state, call)
    ):
        return _reject(entry, agents_error(404, "CALL_NOT_FOUND", "call SID not found or status data expired"))
    status, reason = translate_status("agents", *state.status_of(call))
    body = {"callSid": call_sid, "status": status, "reason": reason}
    return await _answer_status(request, entry, call, body, agents_error)


def add_generation_routes(app: web.Application) -> None:
    """Add the ``v1`` and ``agents`` routes to a local server application."""
    app.router.add_post("/v1/outbound-calling", handle_v1_trigger)
    app.router.add_get("/v1/outbound-calling/{call_sid}/status", handle_v1_status)
    app.router.add_post("/v1/agents/{agent_id}/telephony/outbound-calls", handle_agents_trigger)
    app.router.add_get("/v1/agents/{agent_id}/telephony/outbound-calls/{call_sid}/status", handle_agents_status)
