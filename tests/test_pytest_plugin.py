"""The pytest plugin as a user's project sees it: a conftest that enables it and tests that use it.

Each test writes a small project with pytester and runs pytest on it in a subprocess, so the plugin
is loaded the way a user's ``conftest.py`` loads it, not through this repository's conftest.
"""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

CONFTEST = """
pytest_plugins = ["airflow_provider_polyai.testing.pytest_plugin"]
"""


def _run(pytester: pytest.Pytester, test_source: str) -> pytest.RunResult:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_user=test_source)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")


def test_plugin_registers_time_scale_marker(pytester):
    pytester.makeconftest(CONFTEST)

    result = pytester.runpytest_subprocess("--markers")

    result.stdout.fnmatch_lines(["@pytest.mark.polyai_time_scale(scale):*"])


def test_plugin_scripts_outcome_through_state(pytester):
    result = _run(
        pytester,
        """
import time

import pytest

from airflow_provider_polyai.hooks.polyai import PolyAIHook
from airflow_provider_polyai.testing.scenarios import CallScenario


@pytest.mark.polyai_time_scale(50)
def test_busy_number(polyai_connection):
    polyai_connection.state.scripted["+14155550100"] = CallScenario(status="busy", reason="line busy")
    hook = PolyAIHook()

    call_sid = hook.trigger_call("+14155550100")
    status = hook.get_call_status(call_sid)
    while not status.is_terminal:
        time.sleep(0.05)
        status = hook.get_call_status(call_sid)

    assert status.status == "busy"
    assert status.reason == "line busy"
""",
    )

    result.assert_outcomes(passed=1)


def test_plugin_scripts_outcome_through_admin_route(pytester):
    result = _run(
        pytester,
        """
import time

import pytest
import requests

from airflow_provider_polyai.hooks.polyai import PolyAIHook


@pytest.mark.polyai_time_scale(50)
def test_no_answer(polyai_connection):
    scenario = {"status": "no-answer", "reason": "nobody picked up", "ringing_seconds": 2}
    response = requests.post(
        f"{polyai_connection.base_url}/_local/scenarios", json={"+442071838750": scenario}, timeout=5
    )
    response.raise_for_status()
    hook = PolyAIHook()

    call_sid = hook.trigger_call("020 7183 8750", country_code="GB")
    status = hook.get_call_status(call_sid)
    while not status.is_terminal:
        time.sleep(0.05)
        status = hook.get_call_status(call_sid)

    assert status.status == "no-answer"
""",
    )

    result.assert_outcomes(passed=1)


def test_plugin_applies_time_scale_marker(pytester):
    result = _run(
        pytester,
        """
import pytest


@pytest.mark.polyai_time_scale(20)
def test_scaled(polyai_server):
    assert polyai_server.state.time_scale == 20


def test_unscaled(polyai_server):
    assert polyai_server.state.time_scale == 1
""",
    )

    result.assert_outcomes(passed=2)


def test_plugin_sets_and_restores_connection(pytester):
    result = _run(
        pytester,
        """
import json
import os

import requests

from airflow_provider_polyai.testing.server import DEFAULT_TOKEN

SEEN = {}


def test_connection_points_at_server(polyai_connection):
    conn = json.loads(os.environ["AIRFLOW_CONN_POLYAI_DEFAULT"])
    SEEN["base_url"] = polyai_connection.base_url

    assert conn == {"conn_type": "polyai", "host": polyai_connection.base_url, "password": DEFAULT_TOKEN}


def test_connection_and_server_are_gone_afterwards():
    assert "AIRFLOW_CONN_POLYAI_DEFAULT" not in os.environ
    try:
        requests.get(f"{SEEN['base_url']}/_local/health", timeout=2)
    except requests.ConnectionError:
        return
    raise AssertionError("the server still answers after its test ended")
""",
    )

    result.assert_outcomes(passed=2)


def test_plugin_reports_rejected_token(pytester):
    result = _run(
        pytester,
        """
import pytest

from airflow_provider_polyai.exceptions import PolyAIAuthenticationError
from airflow_provider_polyai.hooks.polyai import PolyAIHook


def test_wrong_token(polyai_server, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_POLYAI_DEFAULT", polyai_server.connection_json(token="wrong-token"))

    with pytest.raises(PolyAIAuthenticationError):
        PolyAIHook().trigger_call("+14155550100")
""",
    )

    result.assert_outcomes(passed=1)
