"""A local server that speaks PolyAI's outbound calling API, for demos and tests without an account.

It implements ``POST /outbound/trigger`` and ``GET /outbound/status/{call_sid}`` with the documented
validation, error bodies and statuses, and the same for the ``v1`` and ``agents`` API
generations (see :mod:`airflow_provider_polyai.testing.server_generations`). A call's status
moves from ``queued`` through ``ringing`` (and ``in-progress`` when answered) to a terminal status
over time; the outcome is chosen by the destination number (see
:mod:`airflow_provider_polyai.testing.scenarios`) or scripted per number.

Routes under ``/_local/`` control the server in tests: script outcomes, inject faults (see
:mod:`airflow_provider_polyai.testing.faults`), read the log of requests received, reset. They need
no token and exist only on this server.

Run it with ``polyai-local-server --port 8787`` or, in Python, ``with LocalPolyAIServer() as server:``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import re
import signal
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

import phonenumbers
from aiohttp import web

from airflow_provider_polyai.testing.faults import FaultPlan, parse_fault
from airflow_provider_polyai.testing.scenarios import CallScenario, default_scenario

log = logging.getLogger(__name__)

#: Connector token the server accepts unless it is given others.
DEFAULT_TOKEN = "local-test-token"
TOKEN_HEADER = "X-PolyAi-Auth-Token"
METADATA_MAX_BASE64_BYTES = 26_000
ENCRYPTIONS = ("TLS/SRTP", "UDP/RTP")
_SID_PATTERN = re.compile(r"OUT-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

#: Requests kept in the log read by ``GET /_local/requests``; older ones are dropped.
REQUEST_LOG_SIZE = 200_000


@dataclass
class PlacedCall:
    call_sid: str
    to_number: str
    placed_at: float
    scenario: CallScenario
    metadata: dict[str, Any] | None
    country_code: str = "ZZ"
    encryption: str = "TLS/SRTP"
    generation: str = "outbound"
    agent_id: str | None = None
    environment: str | None = None
    variant_id: str | None = None


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": message, "code": code}, status=status)


class PolyAIServerState:
    """Calls, scripted outcomes, faults and the request log of one local server.

    :param tokens: connector tokens the server accepts.
    :param time_scale: server seconds per wall-clock second. 10 runs scenarios ten times faster.
    """

    def __init__(self, tokens: tuple[str, ...] = (DEFAULT_TOKEN,), time_scale: float = 1.0) -> None:
        if time_scale <= 0:
            raise ValueError(f"time_scale must be positive, got {time_scale}")
        self.tokens = frozenset(tokens)
        self.time_scale = time_scale
        self.calls: dict[str, PlacedCall] = {}
        self.scripted: dict[str, CallScenario] = {}
        self.faults = FaultPlan()
        self.requests: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_SIZE)
        self.revoked_tokens: set[str] = set()
        self.forgotten_sids: set[str] = set()
        # Agents API only: keys answered with 403, and, when set, the environments each agent has
        # an outbound connector in (others get 404 on trigger).
        self.forbidden_tokens: set[str] = set()
        self.agent_environments: dict[str, set[str]] | None = None

    def scenario_for(self, to_number: str) -> CallScenario:
        return self.scripted.get(to_number) or default_scenario(to_number)

    def status_of(self, call: PlacedCall) -> tuple[str, str]:
        elapsed = (time.monotonic() - call.placed_at) * self.time_scale
        return call.scenario.status_at(elapsed)

    def reset(self) -> None:
        self.calls.clear()
        self.scripted.clear()
        self.faults.clear()
        self.requests.clear()
        self.revoked_tokens.clear()
        self.forgotten_sids.clear()
        self.forbidden_tokens.clear()
        self.agent_environments = None


STATE_KEY = web.AppKey("state", PolyAIServerState)


def _check_token(state: PolyAIServerState, request: web.Request) -> web.Response | None:
    token = request.headers.get(TOKEN_HEADER)
    if not token:
        return _error(401, "UNAUTHORIZED", f"missing {TOKEN_HEADER} header")
    if token not in state.tokens or token in state.revoked_tokens:
        return _error(401, "UNAUTHORIZED", "invalid connector token")
    return None


async def _serve_fault(
    request: web.Request, fault: str, normal: dict[str, Any], error_body: Any = None
) -> web.StreamResponse:
    """Answer ``request`` with ``fault`` in place of the normal JSON body ``normal``.

    :param error_body: builds an error response from status, code and message, for API generations
        whose error bodies differ; defaults to the primary generation's.
    """
    parts = parse_fault(fault)
    if parts["slow"]:
        await asyncio.sleep(float(parts["slow"]))
        return web.json_response(normal)
    if parts["status"]:
        return web.json_response({**normal, "status": parts["status"], "reason": ""})
    if fault == "reset":
        if request.transport is not None:
            request.transport.abort()
        # aiohttp drops a request whose handler is cancelled without logging a traceback.
        raise asyncio.CancelledError("fault injected: reset")
    if fault == "truncated":
        text = json.dumps(normal)
        return web.Response(text=text[: len(text) // 2], content_type="application/json")
    if fault == "not-json":
        return web.Response(text="upstream temporarily unavailable", content_type="text/plain")
    status = int(parts["http"])
    headers = {"Retry-After": parts["retry_after"]} if parts["retry_after"] else None
    if parts["html"]:
        page = f"<html><head><title>{status}</title></head><body><h1>{status}</h1>proxy error</body></html>"
        return web.Response(text=page, status=status, content_type="text/html", headers=headers)
    codes = {400: "BAD_REQUEST", 401: "UNAUTHORIZED", 404: "NOT_FOUND", 429: "RATE_LIMITED"}
    response = (error_body or _error)(status, codes.get(status, "INTERNAL_ERROR"), f"injected fault {fault}")
    if headers:
        response.headers.update(headers)
    return response


def _validate_trigger_body(body: Any) -> tuple[dict[str, Any] | None, web.Response | None]:
    if not isinstance(body, dict):
        return None, _error(400, "INVALID_REQUEST", "request body must be a JSON object")
    to_number = body.get("to_number")
    country_code = body.get("country_code", "ZZ")
    if not isinstance(country_code, str) or (
        country_code != "ZZ" and country_code not in phonenumbers.SUPPORTED_REGIONS
    ):
        return None, _error(400, "INVALID_COUNTRY_CODE", f"invalid country_code {country_code!r}")
    if not isinstance(to_number, str) or not to_number:
        return None, _error(400, "INVALID_NUMBER", "to_number is required")
    try:
        parsed = phonenumbers.parse(to_number, None if country_code == "ZZ" else country_code)
    except phonenumbers.NumberParseException:
        return None, _error(400, "INVALID_NUMBER", f"to_number {to_number!r} is not a phone number")
    if not to_number.startswith("+") or not phonenumbers.is_valid_number(parsed):
        return None, _error(400, "INVALID_NUMBER", f"to_number {to_number!r} is not a valid E.164 number")
    encryption = body.get("encryption", "TLS/SRTP")
    if encryption not in ENCRYPTIONS:
        return None, _error(400, "INVALID_ENCRYPTION", f"encryption must be one of {list(ENCRYPTIONS)}")
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            return None, _error(400, "INVALID_METADATA", "metadata must be a JSON object")
        size = len(base64.b64encode(json.dumps(metadata, separators=(",", ":")).encode()))
        if size >= METADATA_MAX_BASE64_BYTES:
            return None, _error(400, "METADATA_TOO_LARGE", f"metadata is {size} bytes base64-encoded")
    return {"to_number": to_number, "metadata": metadata, "country_code": country_code, "encryption": encryption}, None


def _placed_call(state: PolyAIServerState, call_sid: str, checked: dict[str, Any]) -> PlacedCall:
    to_number = checked["to_number"]
    return PlacedCall(
        call_sid,
        to_number,
        time.monotonic(),
        state.scenario_for(to_number),
        checked["metadata"],
        country_code=checked["country_code"],
        encryption=checked["encryption"],
    )


async def handle_trigger(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    entry: dict[str, Any] = {"time": time.time(), "method": "POST", "path": request.path, "call_sid": None}
    state.requests.append(entry)
    if (denied := _check_token(state, request)) is not None:
        entry["status"] = denied.status
        return denied
    try:
        body = await request.json()
    except ValueError:
        entry["status"] = 400
        return _error(400, "INVALID_REQUEST", "request body is not valid JSON")
    checked, invalid = _validate_trigger_body(body)
    if invalid is not None:
        entry["status"] = invalid.status
        return invalid
    assert checked is not None
    to_number = checked["to_number"]
    entry["to_number"] = to_number
    fault = state.faults.next_fault("trigger", None, to_number)
    call_sid = f"OUT-{uuid.uuid4()}"
    if fault is not None:
        entry["fault"] = fault
        # A slow response still places the call, as a real server that answers late would.
        if fault.startswith("slow:"):
            state.calls[call_sid] = _placed_call(state, call_sid, checked)
            entry["call_sid"] = call_sid
        return await _serve_fault(request, fault, {"call_sid": call_sid})
    state.calls[call_sid] = _placed_call(state, call_sid, checked)
    entry["call_sid"] = call_sid
    entry["status"] = 200
    return web.json_response({"call_sid": call_sid})


async def handle_status(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    call_sid = request.match_info["call_sid"]
    entry: dict[str, Any] = {"time": time.time(), "method": "GET", "path": request.path, "call_sid": call_sid}
    state.requests.append(entry)
    if (denied := _check_token(state, request)) is not None:
        entry["status"] = denied.status
        return denied
    if not _SID_PATTERN.fullmatch(call_sid):
        entry["status"] = 400
        return _error(400, "INVALID_CALL_SID", f"invalid call SID format: {call_sid!r}")
    call = state.calls.get(call_sid)
    if call is None or call_sid in state.forgotten_sids or call.generation != "outbound":
        entry["status"] = 404
        return _error(404, "NOT_FOUND", "call SID not found")
    status, reason = state.status_of(call)
    entry["call_status"] = status
    fault = state.faults.next_fault("status", call_sid, call.to_number)
    if fault is not None:
        entry["fault"] = fault
        return await _serve_fault(request, fault, {"status": status, "reason": reason})
    entry["status"] = 200
    return web.json_response({"status": status, "reason": reason})


async def handle_admin(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    action = request.match_info["action"]
    if request.method == "GET" and action == "health":
        return web.json_response({"ok": True, "calls": len(state.calls)})
    if request.method == "GET" and action == "requests":
        call_sid = request.query.get("call_sid")
        entries = [entry for entry in state.requests if call_sid is None or entry["call_sid"] == call_sid]
        return web.json_response(entries)
    if request.method == "GET" and action == "calls":
        return web.json_response(
            [
                {
                    "call_sid": call.call_sid,
                    "to_number": call.to_number,
                    "country_code": call.country_code,
                    "encryption": call.encryption,
                    "metadata": call.metadata,
                    "generation": call.generation,
                    "agent_id": call.agent_id,
                    "environment": call.environment,
                    "variant_id": call.variant_id,
                }
                for call in state.calls.values()
            ]
        )
    if request.method != "POST":
        return _error(405, "METHOD_NOT_ALLOWED", f"{request.method} /_local/{action} is not supported")
    data = await request.json() if request.can_read_body else {}
    try:
        if action == "reset":
            state.reset()
        elif action == "scenarios":
            for number, scenario in data.items():
                state.scripted[number] = CallScenario.from_json(scenario)
        elif action == "faults":
            state.faults.add_rule(data)
        elif action == "random-faults":
            state.faults.set_random(data or None)
        elif action == "revoke-token":
            state.revoked_tokens.add(data["token"])
        elif action == "forget-call":
            state.forgotten_sids.add(data["call_sid"])
        elif action == "forbid-token":
            state.forbidden_tokens.add(data["token"])
        elif action == "agent-environments":
            state.agent_environments = {agent: set(environments) for agent, environments in data.items()}
        else:
            return _error(404, "NOT_FOUND", f"unknown admin route /_local/{action}")
    except (KeyError, TypeError, ValueError) as err:
        return _error(400, "INVALID_REQUEST", str(err))
    return web.json_response({"ok": True, "faults_served": state.faults.served})


def create_app(state: PolyAIServerState | None = None) -> web.Application:
    """Return the aiohttp application of a local PolyAI server."""
    app = web.Application()
    app[STATE_KEY] = state or PolyAIServerState()
    app.router.add_post("/outbound/trigger", handle_trigger)
    app.router.add_get("/outbound/status/{call_sid}", handle_status)
    app.router.add_route("*", "/_local/{action}", handle_admin)
    # Imported here because that module builds on this one's helpers.
    from airflow_provider_polyai.testing.server_generations import add_generation_routes

    add_generation_routes(app)
    return app


class LocalPolyAIServer:
    """A local PolyAI server running on a background thread, for tests and notebooks.

    Use it as a context manager; ``base_url`` is then the connection host to use::

        with LocalPolyAIServer(time_scale=20) as server:
            conn_uri = server.connection_json()

    :param host: address to bind; only loopback addresses are allowed.
    :param port: port to bind; 0 picks a free one.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tokens: tuple[str, ...] = (DEFAULT_TOKEN,),
        time_scale: float = 1.0,
    ) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"LocalPolyAIServer binds loopback only; got host {host!r}")
        self.host = host
        self.port = port
        self.state = PolyAIServerState(tokens=tokens, time_scale=time_scale)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        # An IPv6 address is bracketed in a URL, so that its colons are not read as the port separator.
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def token(self) -> str:
        return sorted(self.state.tokens)[0]

    def connection_json(
        self,
        token: str | None = None,
        *,
        api_generation: str | None = None,
        agent_id: str = "local-agent",
        environment: str = "sandbox",
    ) -> str:
        """Return the ``AIRFLOW_CONN_<ID>`` value of a ``polyai`` connection to this server.

        :param api_generation: ``v1`` or ``agents`` to use that API generation; ``None`` for the
            primary one. ``agent_id`` and ``environment`` are only written for ``agents``.
        """
        conn: dict[str, Any] = {"conn_type": "polyai", "host": self.base_url, "password": token or self.token}
        if api_generation:
            extra: dict[str, str] = {"api_generation": api_generation}
            if api_generation == "agents":
                extra.update(agent_id=agent_id, environment=environment)
            conn["extra"] = extra
        return json.dumps(conn)

    def start(self) -> LocalPolyAIServer:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._start_site())
            except BaseException as err:  # reported to the starting thread below
                errors.append(err)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup() if self._runner else asyncio.sleep(0))
            loop.close()

        self._thread = threading.Thread(target=run, name="local-polyai-server", daemon=True)
        self._thread.start()
        ready.wait(timeout=30)
        if errors:
            raise errors[0]
        return self

    async def _start_site(self) -> None:
        self._runner = web.AppRunner(create_app(self.state), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        # aiohttp types _server as AbstractServer; a TCPSite creates an asyncio.Server, which has sockets.
        if self.port == 0 and isinstance(server, asyncio.Server) and server.sockets:
            self.port = server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
        self._loop = None
        self._thread = None

    def __enter__(self) -> LocalPolyAIServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """Run a local PolyAI server in the foreground until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8787, help="port to listen on (default 8787)")
    parser.add_argument(
        "--token",
        action="append",
        help=f"connector token to accept; repeat for several (default {DEFAULT_TOKEN!r})",
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="server seconds per wall-clock second; 10 makes calls progress ten times faster (default 1)",
    )
    parser.add_argument(
        "--port-file",
        help="write the bound port to this file once the server accepts requests (useful with --port 0)",
    )
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error(f"--host must be a loopback address, got {args.host!r}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    server = LocalPolyAIServer(
        args.host, args.port, tokens=tuple(args.token or (DEFAULT_TOKEN,)), time_scale=args.time_scale
    )
    server.start()
    log.info("Local PolyAI server listening on %s", server.base_url)
    if args.port_file:
        with open(args.port_file, "w") as file:
            file.write(f"{server.port}\n")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        log.info("Local PolyAI server stopped")

if __name__ == "__main__":
    main()
