"""The PolyAI connection type in Airflow's Connections UI, driven in headless Chromium.

The test starts a real Airflow API server (with its UI) on a free loopback port, with a throwaway
AIRFLOW_HOME and SQLite database, and the local PolyAI server for the Test button to reach. The
browser is Debian's ``chromium`` driven by Playwright; no browser is ever downloaded.

Set ``POLYAI_UPDATE_SCREENSHOTS=1`` to copy the form's screenshot to ``docs/images/``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_polyai.testing.server import LocalPolyAIServer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM),
        reason="Chromium is not installed: `apt-get install -y chromium` (Debian) to run the UI tests",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "images" / "connection-form.png"

#: Seconds the API server may take to answer its first request; about 15 s on a 2-core machine.
API_SERVER_START_TIMEOUT = 120.0

#: Flags that keep Chromium off the network except for the pages the test opens.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Airflow 3.3.2's row Test button sends "port": 0 for a connection stored without a port, and the
# API rejects it because 0 differs from the stored NULL. Fixed upstream in Airflow after 3.3.2.
ROW_TEST_PORT_BUG_DETAIL = "The host or port to test differs from the stored connection"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_up(url: str, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + API_SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"airflow api-server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    pytest.fail(f"airflow api-server did not answer {url} within {API_SERVER_START_TIMEOUT:.0f} s")


@pytest.fixture(scope="module")
def polyai_ui_server() -> Iterator[LocalPolyAIServer]:
    with LocalPolyAIServer() as server:
        yield server


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start ``airflow api-server`` on a free loopback port with its own home; return its base URL."""
    home = tmp_path_factory.mktemp("airflow-ui-home")
    port = _free_port()
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
        # Every visitor is an admin, so the test needs no login page or token.
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
    }
    env.pop("AIRFLOW_CONN_POLYAI_DEFAULT", None)
    airflow = str(bin_dir / "airflow")
    subprocess.run([airflow, "db", "migrate"], check=True, capture_output=True, env=env)

    log_path = home / "api-server.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [airflow, "api-server", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(f"{base_url}/api/v2/version", process, log_path)
        yield base_url
    finally:
        # The API server runs worker processes; signal the whole session it leads.
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def browser_context() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tempfile.mkdtemp(prefix="polyai-chromium-profile-"),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1400, "height": 1200},
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser_context):
    page = browser_context.new_page()
    yield page
    page.close()


def _open_polyai_form(page, api_server: str):
    page.goto(f"{api_server}/connections")
    page.get_by_role("button", name="Add Connection").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("combobox").fill("PolyAI")
    page.get_by_role("option", name="PolyAI", exact=True).click()
    dialog.get_by_label("API base URL").wait_for()
    return dialog


def _add_connection(page, api_server: str, conn_id: str, host: str, token: str) -> None:
    dialog = _open_polyai_form(page, api_server)
    dialog.get_by_label("Connection ID").fill(conn_id)
    dialog.get_by_label("API base URL").fill(host)
    dialog.get_by_label("Connector token").fill(token)
    with page.expect_response(
        lambda response: response.url.endswith("/api/v2/connections") and response.request.method == "POST"
    ) as created:
        dialog.get_by_role("button", name="Save").click()
    assert created.value.status == 201, created.value.text()
    page.get_by_role("row").filter(has_text=conn_id).wait_for()


def test_form_lists_polyai_type(page, api_server):
    page.goto(f"{api_server}/connections")
    page.get_by_role("button", name="Add Connection").click()
    page.get_by_role("dialog").get_by_role("combobox").fill("Poly")

    options = page.get_by_role("option").all_inner_texts()

    assert "PolyAI" in options


def test_form_relabels_standard_fields(page, api_server):
    dialog = _open_polyai_form(page, api_server)

    assert dialog.get_by_label("API base URL").get_attribute("name") == "host"
    assert dialog.get_by_label("Connector token").get_attribute("name") == "password"
    assert dialog.get_by_label("API base URL").get_attribute("placeholder") == (
        "https://api.us-1.platform.polyai.app"
    )


@pytest.mark.parametrize("field", ["login", "port", "schema"])
def test_form_hides_unused_field(page, api_server, field):
    dialog = _open_polyai_form(page, api_server)

    assert dialog.locator(f"[name='{field}']").count() == 0


def test_form_shows_extra_fields(page, api_server, tmp_path):
    dialog = _open_polyai_form(page, api_server)
    dialog.get_by_label("Connection ID").fill("polyai_default")
    dialog.get_by_text("Extra Fields", exact=True).click()

    timeout_field = dialog.get_by_label("Request timeout (seconds)")
    timeout_field.wait_for()

    assert timeout_field.input_value() == "10"
    assert dialog.get_by_text("Verify TLS certificates").count() == 1
    assert dialog.get_by_text("Allow plain HTTP to a remote host").count() == 1
    # Show the standard fields too, so the screenshot documents the whole form.
    dialog.get_by_text("Standard Fields", exact=True).click()
    dialog.get_by_label("API base URL").wait_for()
    screenshot = tmp_path / SCREENSHOT.name
    page.screenshot(path=str(screenshot), full_page=True)
    if os.environ.get("POLYAI_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(screenshot, SCREENSHOT)


def test_form_saves_polyai_connection(page, api_server, polyai_ui_server):
    _add_connection(page, api_server, "polyai_saved", polyai_ui_server.base_url, polyai_ui_server.token)

    stored = page.request.get(f"{api_server}/api/v2/connections/polyai_saved").json()

    assert stored["conn_type"] == "polyai"
    assert stored["host"] == polyai_ui_server.base_url
    assert stored["port"] is None
    # The form stores the API generation fields as null when left empty; the hook reads null as unset.
    assert json.loads(stored["extra"]) == {
        "timeout": 10,
        "verify_ssl": True,
        "allow_insecure_http": False,
        "api_generation": None,
        "agent_id": None,
        "environment": None,
        "variant_id": None,
    }


def test_connection_test_endpoint_reaches_local_server(page, api_server, polyai_ui_server):
    """Test a saved connection the way the UI does, through ``POST /api/v2/connections/test``."""
    _add_connection(page, api_server, "polyai_api_test", polyai_ui_server.base_url, polyai_ui_server.token)
    polyai_ui_server.state.requests.clear()

    response = page.request.post(
        f"{api_server}/api/v2/connections/test",
        data={"connection_id": "polyai_api_test", "conn_type": "polyai", "host": polyai_ui_server.base_url},
    )
    result = response.json()

    assert response.status == 200, result
    assert result["status"] is True, result["message"]
    assert "connector token was accepted" in result["message"]
    assert [entry["path"] for entry in polyai_ui_server.state.requests] == [
        "/outbound/status/OUT-00000000-0000-0000-0000-000000000000"
    ]


def test_connection_test_endpoint_reports_rejected_token(page, api_server, polyai_ui_server):
    _add_connection(page, api_server, "polyai_bad_token", polyai_ui_server.base_url, "not-the-token")

    response = page.request.post(
        f"{api_server}/api/v2/connections/test",
        data={"connection_id": "polyai_bad_token", "conn_type": "polyai", "host": polyai_ui_server.base_url},
    )
    result = response.json()

    assert result["status"] is False
    assert "connector token was rejected" in result["message"]


def test_row_test_button_shows_success(page, api_server, polyai_ui_server):
    _add_connection(page, api_server, "polyai_row_test", polyai_ui_server.base_url, polyai_ui_server.token)
    row = page.get_by_role("row").filter(has_text="polyai_row_test")

    with page.expect_response(lambda response: response.url.endswith("/api/v2/connections/test")) as tested:
        row.get_by_role("button", name="Test Connection").click()
    response = tested.value

    if response.status == 400 and ROW_TEST_PORT_BUG_DETAIL in response.text():
        pytest.xfail(
            "Airflow's row Test button sends port 0 for a connection without a port and the API "
            "rejects it (Airflow 3.3.2 bug); test_connection_test_endpoint_reaches_local_server "
            "covers the same check through the API."
        )
    assert response.status == 200, response.text()
    assert response.json()["status"] is True
    page.get_by_text("connector token was accepted").wait_for()
