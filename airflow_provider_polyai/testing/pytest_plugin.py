"""pytest fixtures that run a local PolyAI server, so DAG tests need no PolyAI account.

Enable them in a ``conftest.py``::

    pytest_plugins = ["airflow_provider_polyai.testing.pytest_plugin"]

``polyai_server`` starts a :class:`~airflow_provider_polyai.testing.server.LocalPolyAIServer` on a
free loopback port for one test. ``polyai_connection`` also points the ``polyai_default``
connection at it through ``AIRFLOW_CONN_POLYAI_DEFAULT``. A test picks the server's speed with
``@pytest.mark.polyai_time_scale(20)``: 20 server seconds pass per wall-clock second.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from airflow_provider_polyai.testing.server import LocalPolyAIServer


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "polyai_time_scale(scale): server seconds per wall-clock second for polyai_server"
    )


@pytest.fixture
def polyai_server(request: pytest.FixtureRequest) -> Iterator[LocalPolyAIServer]:
    """A local PolyAI server for one test; script it through ``server.state``."""
    marker = request.node.get_closest_marker("polyai_time_scale")
    time_scale = float(marker.args[0]) if marker else 1.0
    with LocalPolyAIServer(time_scale=time_scale) as server:
        yield server


@pytest.fixture
def polyai_connection(polyai_server: LocalPolyAIServer, monkeypatch: pytest.MonkeyPatch) -> LocalPolyAIServer:
    """Point the ``polyai_default`` connection at ``polyai_server`` and return the server."""
    monkeypatch.setenv("AIRFLOW_CONN_POLYAI_DEFAULT", polyai_server.connection_json())
    return polyai_server
