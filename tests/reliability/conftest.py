"""Fixtures for the reliability tests: fault injection, fast hooks, a network guard, DAG runs."""

from __future__ import annotations

import asyncio
import json
import socket
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_provider_polyai.hooks.polyai import PolyAIHook
from airflow_provider_polyai.testing.server import LocalPolyAIServer

#: A connector token distinctive enough that finding it anywhere in captured text means a leak.
CANARY_TOKEN = "pAI-canary-7Hq2xZ-connector-token"

#: Client timeout, in seconds, of the connections made here; ``slow:`` faults wait longer than this.
CLIENT_TIMEOUT_SECONDS = 0.5
SLOW_FAULT = "slow:1.5"

# Faults after which a status request is worth repeating, with the HTTP status each reports.
TRANSIENT_STATUS_FAULTS = [
    ("500", 500),
    ("502", 502),
    ("503", 503),
    ("504", 504),
    ("502-html", 502),
    ("503-html", 503),
    ("504-html", 504),
    ("429", 429),
    ("429:0.05", 429),
    ("reset", None),
    (SLOW_FAULT, None),
    ("truncated", None),
    ("not-json", None),
]


def admin(server: LocalPolyAIServer, action: str, payload: dict[str, Any] | None = None) -> Any:
    """POST ``payload`` to the server's ``/_local/<action>`` route and return its JSON response."""
    data = json.dumps(payload or {}).encode()
    request = urllib.request.Request(
        f"{server.base_url}/_local/{action}", data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def add_faults(server: LocalPolyAIServer, faults: list[str], endpoint: str = "status", **match: str) -> None:
    """Make the server serve ``faults``, in order, to the next matching requests."""
    admin(server, "faults", {"faults": faults, "endpoint": endpoint, **match})


def request_log(server: LocalPolyAIServer) -> list[dict[str, Any]]:
    """Return every request the server has received, oldest first."""
    with urllib.request.urlopen(f"{server.base_url}/_local/requests", timeout=10) as response:
        return json.loads(response.read())


def connection_json(server: LocalPolyAIServer, token: str | None = None, **extra: Any) -> str:
    """Return an ``AIRFLOW_CONN_*`` value for ``server`` with a short client timeout."""
    extra = {"timeout": CLIENT_TIMEOUT_SECONDS, **extra}
    return json.dumps(
        {"conn_type": "polyai", "host": server.base_url, "password": token or server.token, "extra": extra}
    )


def fast_hook(conn_id: str = "polyai_default", max_attempts: int = 4) -> PolyAIHook:
    """Return a hook whose retries wait milliseconds, so a burst of faults costs no real time."""
    return PolyAIHook(conn_id, max_attempts=max_attempts, retry_min_wait=0.01, retry_max_wait=0.05)


def log_lines(capfd: pytest.CaptureFixture[str]) -> list[str]:
    """Return the lines written to stdout and stderr since the last read.

    Airflow 3 renders both its structlog loggers (``self.log`` of hooks and operators) and the
    standard ``logging`` loggers to the process's output, so this is what a task or triggerer log
    would contain.
    """
    out, err = capfd.readouterr()
    return (out + err).splitlines()


def run_trigger(trigger: Any) -> list[Any]:
    """Run a trigger to completion in a fresh event loop and return every event it yielded."""

    async def collect() -> list[Any]:
        return [event async for event in trigger.run()]

    return asyncio.run(collect())


@pytest.fixture
def canary_server() -> Iterator[LocalPolyAIServer]:
    """A local server at 20x speed that accepts only :data:`CANARY_TOKEN`."""
    with LocalPolyAIServer(tokens=(CANARY_TOKEN,), time_scale=20) as server:
        yield server


@pytest.fixture
def fast_server() -> Iterator[LocalPolyAIServer]:
    """A local server at 20x speed with the default token."""
    with LocalPolyAIServer(time_scale=20) as server:
        yield server


@pytest.fixture
def connect(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Return a function that points connection ``conn_id`` at a server, with a short timeout."""

    def point(
        server: LocalPolyAIServer, conn_id: str = "polyai_default", token: str | None = None, **extra: Any
    ) -> None:
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", connection_json(server, token, **extra))

    return point


@pytest.fixture
def name_lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every host name resolved; a name that is not loopback is refused, never looked up.

    Both ``requests`` (through urllib3) and aiohttp's default resolver go through
    ``socket.getaddrinfo``, so no connection to another host can start without passing here.
    """
    looked_up: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        looked_up.append(name)
        if name not in ("127.0.0.1", "localhost", "::1"):
            raise OSError(f"test network guard: refused to resolve {name!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)
    return looked_up


def sync_dag_to_db(dag: Any) -> None:
    """Write a DAG defined in a test to the metadata database, which ``dag.test()`` requires."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager

    from tests.compat import dagbag_module

    dagbag = dagbag_module()
    DagBag, sync_bag_to_db = dagbag.DagBag, dagbag.sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder=tempfile.mkdtemp(prefix="polyai-reliability-dags-"))
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)
