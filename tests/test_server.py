"""The local PolyAI server spoken to over plain HTTP: validation, errors, progression, faults, log."""

from __future__ import annotations

import json
import re

import pytest
import requests

from airflow_provider_polyai.testing.faults import validate_fault
from airflow_provider_polyai.testing.scenarios import CallScenario, default_scenario
from airflow_provider_polyai.testing.server import DEFAULT_TOKEN, TOKEN_HEADER, LocalPolyAIServer

UNKNOWN_SID = "OUT-00000000-1111-2222-3333-444444444444"
SID_PATTERN = re.compile(r"OUT-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
NUMBER = "+14155550120"


class Client:
    """A bare HTTP client for one server, so the tests see exactly what goes over the wire."""

    def __init__(self, server: LocalPolyAIServer, token: str | None = DEFAULT_TOKEN) -> None:
        self.base_url = server.base_url
        self.headers = {TOKEN_HEADER: token} if token is not None else {}

    def trigger(self, body: object) -> requests.Response:
        return requests.post(f"{self.base_url}/outbound/trigger", json=body, headers=self.headers, timeout=5)

    def status(self, call_sid: str) -> requests.Response:
        return requests.get(f"{self.base_url}/outbound/status/{call_sid}", headers=self.headers, timeout=5)

    def admin(self, action: str, payload: object = None) -> requests.Response:
        return requests.post(f"{self.base_url}/_local/{action}", json=payload, timeout=5)

    def admin_get(self, action: str, **params: str) -> requests.Response:
        return requests.get(f"{self.base_url}/_local/{action}", params=params, timeout=5)


@pytest.fixture
def client(polyai_server: LocalPolyAIServer) -> Client:
    return Client(polyai_server)


def _metadata_of_json_size(size: int) -> dict[str, str]:
    # '{"k":""}' is 8 bytes of compact JSON, so the value pads the document to ``size`` bytes.
    return {"k": "x" * (size - 8)}


# -- trigger validation -------------------------------------------------------------------------


def test_server_trigger_returns_sid(client):
    response = client.trigger({"to_number": NUMBER})

    assert response.status_code == 200
    assert SID_PATTERN.fullmatch(response.json()["call_sid"])


def test_server_trigger_accepts_every_option(client):
    body = {"to_number": "+442071838750", "country_code": "GB", "encryption": "UDP/RTP", "metadata": {"a": 1}}

    assert client.trigger(body).status_code == 200


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, "INVALID_NUMBER"),
        ({"to_number": "4155550120"}, "INVALID_NUMBER"),
        ({"to_number": "+1415"}, "INVALID_NUMBER"),
        ({"to_number": "020 7183 8750", "country_code": "GB"}, "INVALID_NUMBER"),
        ({"to_number": "call me"}, "INVALID_NUMBER"),
        ({"to_number": NUMBER, "country_code": "XX"}, "INVALID_COUNTRY_CODE"),
        ({"to_number": NUMBER, "country_code": 1}, "INVALID_COUNTRY_CODE"),
        ({"to_number": NUMBER, "encryption": "none"}, "INVALID_ENCRYPTION"),
        ({"to_number": NUMBER, "metadata": "a=1"}, "INVALID_METADATA"),
        ([NUMBER], "INVALID_REQUEST"),
    ],
)
def test_server_trigger_rejects_bad_body(client, body, code):
    response = client.trigger(body)

    assert response.status_code == 400
    assert response.json()["code"] == code


def test_server_trigger_rejects_body_not_json(client):
    response = requests.post(
        f"{client.base_url}/outbound/trigger", data="{", headers=client.headers, timeout=5
    )

    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_REQUEST"


def test_server_trigger_accepts_metadata_under_limit(client):
    # 19,497 JSON bytes are 25,996 bytes once base64-encoded.
    response = client.trigger({"to_number": NUMBER, "metadata": _metadata_of_json_size(19_497)})

    assert response.status_code == 200


def test_server_trigger_rejects_metadata_at_limit(client):
    # 19,500 JSON bytes are exactly 26,000 bytes once base64-encoded.
    response = client.trigger({"to_number": NUMBER, "metadata": _metadata_of_json_size(19_500)})

    assert response.status_code == 400
    assert response.json()["code"] == "METADATA_TOO_LARGE"


def test_server_rejected_trigger_places_no_call(client):
    client.trigger({"to_number": "+1415"})

    assert client.admin_get("calls").json() == []


# -- authentication -----------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "", "wrong-token"])
def test_server_rejects_bad_token_on_trigger(polyai_server, token):
    response = Client(polyai_server, token).trigger({"to_number": NUMBER})

    assert response.status_code == 401
    assert response.json()["code"] == "UNAUTHORIZED"


def test_server_checks_token_before_body(polyai_server):
    # An invalid body with a wrong token must still get 401, because the token is checked first.
    response = Client(polyai_server, "wrong-token").trigger({"to_number": "bad"})

    assert response.status_code == 401


def test_server_checks_token_before_sid(polyai_server):
    response = Client(polyai_server, "wrong-token").status("OUT-not-a-uuid")

    assert response.status_code == 401


def test_server_revoked_token_is_rejected(client):
    client.admin("revoke-token", {"token": DEFAULT_TOKEN})

    assert client.status(UNKNOWN_SID).status_code == 401


def test_server_accepts_each_configured_token():
    with LocalPolyAIServer(tokens=("token-a", "token-b")) as server:
        codes = [Client(server, token).status(UNKNOWN_SID).status_code for token in ("token-a", "token-b")]

    assert codes == [404, 404]


# -- status endpoint ----------------------------------------------------------------------------


@pytest.mark.parametrize("call_sid", ["OUT-not-a-uuid", "out-00000000-1111-2222-3333-444444444444", "12345"])
def test_server_status_rejects_malformed_sid(client, call_sid):
    response = client.status(call_sid)

    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_CALL_SID"


def test_server_status_unknown_sid_is_404(client):
    response = client.status(UNKNOWN_SID)

    assert response.status_code == 404
    assert response.json()["code"] == "NOT_FOUND"


def test_server_forgotten_call_is_404(client):
    call_sid = client.trigger({"to_number": NUMBER}).json()["call_sid"]
    client.admin("forget-call", {"call_sid": call_sid})

    assert client.status(call_sid).status_code == 404


def test_server_status_body_has_status_and_reason(client):
    call_sid = client.trigger({"to_number": NUMBER}).json()["call_sid"]

    assert client.status(call_sid).json() == {"status": "queued", "reason": ""}


@pytest.mark.polyai_time_scale(50)
def test_server_call_progresses_through_phases(client):
    # At 50x, the default scenario (1 s queued, 3 s ringing, 12 s in progress) ends in 0.32 s.
    call_sid = client.trigger({"to_number": "+14155550128"}).json()["call_sid"]
    seen: list[str] = []
    for _ in range(20_000):  # bounds the loop if the call never ends; about 0.3 s of reads are needed
        status = client.status(call_sid).json()["status"]
        if not seen or seen[-1] != status:
            seen.append(status)
        if status == "completed":
            break

    assert seen[0] == "queued"
    assert seen[-1] == "completed"
    assert set(seen) <= {"queued", "ringing", "in-progress", "completed"}


@pytest.mark.polyai_time_scale(50)
def test_server_terminal_status_never_changes(client):
    call_sid = client.trigger({"to_number": "+14155550125"}).json()["call_sid"]
    for _ in range(20_000):  # bounds the loop if the call never ends
        if client.status(call_sid).json()["status"] == "busy":
            break

    reads = [client.status(call_sid).json() for _ in range(5)]

    assert reads == [{"status": "busy", "reason": "destination busy"}] * 5


# -- scenarios ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("elapsed", "expected"),
    [(0.0, "queued"), (0.99, "queued"), (1.0, "ringing"), (3.99, "ringing"), (4.0, "in-progress"),
     (15.99, "in-progress"), (16.0, "completed"), (1e6, "completed")],
)
def test_scenario_status_at_connected_call(elapsed, expected):
    assert CallScenario().status_at(elapsed)[0] == expected


def test_scenario_unanswered_call_skips_in_progress():
    scenario = CallScenario(status="no-answer", reason="nobody", queued_seconds=1, ringing_seconds=2)

    assert scenario.status_at(2.5) == ("ringing", "")
    assert scenario.status_at(3.0) == ("no-answer", "nobody")


@pytest.mark.parametrize(
    ("digit", "status"),
    [("0", "completed"), ("4", "no-answer"), ("5", "busy"), ("6", "failed"), ("7", "cancelled"), ("8", "completed")],
)
def test_default_scenario_follows_last_digit(digit, status):
    assert default_scenario(f"+1415555012{digit}").status == status


def test_scenario_from_json_rejects_unknown_key():
    with pytest.raises(ValueError) as excinfo:
        CallScenario.from_json({"status": "busy", "ring_seconds": 3})

    assert "ring_seconds" in str(excinfo.value)


def test_server_scripted_scenario_overrides_default(client):
    scripted = {"status": "failed", "reason": "scripted", "queued_seconds": 0, "ringing_seconds": 0}
    client.admin("scenarios", {NUMBER: scripted})
    call_sid = client.trigger({"to_number": NUMBER}).json()["call_sid"]

    assert client.status(call_sid).json() == {"status": "failed", "reason": "scripted"}


def test_server_scenario_admin_rejects_bad_scenario(client):
    response = client.admin("scenarios", {NUMBER: {"colour": "red"}})

    assert response.status_code == 400


# -- faults -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["500", "502-html", "429", "429:3", "reset", "slow:0.5", "truncated",
                                   "not-json", "status:voicemail", "404"])
def test_fault_names_are_accepted(fault):
    assert validate_fault(fault) == fault


@pytest.mark.parametrize("fault", ["200", "600", "slow", "slow:-1", "status:", "reset:1", "explode"])
def test_fault_names_reject_unknown(fault):
    with pytest.raises(ValueError):
        validate_fault(fault)


def test_server_fault_rule_rejects_unknown_fault(client):
    response = client.admin("faults", {"faults": ["explode"]})

    assert response.status_code == 400


def test_server_fault_rule_serves_faults_in_order(client):
    call_sid = client.trigger({"to_number": NUMBER}).json()["call_sid"]
    client.admin("faults", {"endpoint": "status", "faults": ["503", "429:7", "status:voicemail"]})

    first, second, third, fourth = (client.status(call_sid) for _ in range(4))

    assert first.status_code == 503
    assert second.status_code == 429
    assert second.headers["Retry-After"] == "7"
    assert third.json()["status"] == "voicemail"
    assert fourth.json()["status"] == "queued"


def test_server_html_fault_is_html(client):
    client.admin("faults", {"endpoint": "trigger", "faults": ["502-html"]})

    response = client.trigger({"to_number": NUMBER})

    assert response.status_code == 502
    assert response.headers["Content-Type"].startswith("text/html")


def test_server_fault_rule_matches_number_only(client):
    client.admin("faults", {"endpoint": "trigger", "to_number": "+14155550121", "faults": ["500"]})

    other = client.trigger({"to_number": NUMBER})
    matching = client.trigger({"to_number": "+14155550121"})

    assert other.status_code == 200
    assert matching.status_code == 500


def test_server_fault_rule_matches_sid_only(client):
    first = client.trigger({"to_number": NUMBER}).json()["call_sid"]
    second = client.trigger({"to_number": NUMBER}).json()["call_sid"]
    client.admin("faults", {"endpoint": "status", "call_sid": second, "faults": ["500"]})

    assert client.status(first).status_code == 200
    assert client.status(second).status_code == 500


def test_server_trigger_fault_places_no_call(client):
    client.admin("faults", {"endpoint": "trigger", "faults": ["502"]})
    client.trigger({"to_number": NUMBER})

    assert client.admin_get("calls").json() == []


def test_server_reset_fault_closes_connection(client):
    client.admin("faults", {"endpoint": "trigger", "faults": ["reset"]})

    with pytest.raises(requests.ConnectionError):
        client.trigger({"to_number": NUMBER})


def test_server_truncated_fault_is_not_json(client):
    call_sid = client.trigger({"to_number": NUMBER}).json()["call_sid"]
    client.admin("faults", {"endpoint": "status", "faults": ["truncated"]})

    response = client.status(call_sid)

    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()


def test_server_random_faults_follow_seed(client):
    call_sid = client.trigger({"to_number": NUMBER}).json()["call_sid"]
    client.admin("random-faults", {"probability": 0.5, "kinds": ["503"], "seed": 7})
    first_run = [client.status(call_sid).status_code for _ in range(20)]
    client.admin("random-faults", {"probability": 0.5, "kinds": ["503"], "seed": 7})
    second_run = [client.status(call_sid).status_code for _ in range(20)]

    assert first_run == second_run
    assert set(first_run) == {200, 503}


def test_server_random_faults_stop_when_cleared(client):
    call_sid = client.trigger({"to_number": NUMBER}).json()["call_sid"]
    client.admin("random-faults", {"probability": 1, "kinds": ["503"]})
    client.admin("random-faults", None)

    assert client.status(call_sid).status_code == 200


def test_server_admin_reports_faults_served(client):
    client.admin("faults", {"endpoint": "trigger", "faults": ["500", "500"]})
    client.trigger({"to_number": NUMBER})
    client.trigger({"to_number": NUMBER})

    assert client.admin("random-faults", None).json()["faults_served"] == {"500": 2}


# -- request log, reset and admin routes --------------------------------------------------------


def test_server_request_log_records_each_request(client):
    call_sid = client.trigger({"to_number": NUMBER}).json()["call_sid"]
    client.status(call_sid)
    client.status(UNKNOWN_SID)

    entries = client.admin_get("requests").json()

    assert [(entry["method"], entry["status"]) for entry in entries] == [("POST", 200), ("GET", 200), ("GET", 404)]
    assert entries[0]["to_number"] == NUMBER
    assert entries[1]["call_status"] == "queued"
    assert entries[0]["time"] <= entries[1]["time"] <= entries[2]["time"]


def test_server_request_log_filters_by_sid(client):
    call_sid = client.trigger({"to_number": NUMBER}).json()["call_sid"]
    client.status(call_sid)
    client.status(UNKNOWN_SID)

    entries = client.admin_get("requests", call_sid=call_sid).json()

    assert [entry["method"] for entry in entries] == ["POST", "GET"]


def test_server_request_log_records_rejected_token(polyai_server):
    Client(polyai_server, "wrong-token").status(UNKNOWN_SID)

    [entry] = Client(polyai_server).admin_get("requests").json()
    assert entry["status"] == 401


def test_server_reset_clears_everything(client):
    client.trigger({"to_number": NUMBER})
    client.admin("faults", {"faults": ["500"]})
    client.admin("reset")

    assert client.admin_get("calls").json() == []
    assert client.admin_get("requests").json() == []
    assert client.trigger({"to_number": NUMBER}).status_code == 200


def test_server_health_counts_calls(client):
    client.trigger({"to_number": NUMBER})

    assert client.admin_get("health").json() == {"ok": True, "calls": 1}


def test_server_admin_unknown_route_is_404(client):
    assert client.admin("explode", {}).status_code == 404


def test_server_admin_get_on_post_route_is_405(client):
    assert client.admin_get("reset").status_code == 405


# -- construction -------------------------------------------------------------------------------


def test_server_binds_loopback_only():
    with pytest.raises(ValueError) as excinfo:
        LocalPolyAIServer(host="0.0.0.0")

    assert "loopback" in str(excinfo.value)


def test_server_rejects_non_positive_time_scale():
    with pytest.raises(ValueError):
        LocalPolyAIServer(time_scale=0)


def test_server_connection_json_points_at_server(polyai_server):
    conn = json.loads(polyai_server.connection_json())

    assert conn == {"conn_type": "polyai", "host": polyai_server.base_url, "password": DEFAULT_TOKEN}


def test_server_base_url_brackets_ipv6():
    with LocalPolyAIServer(host="::1") as server:
        response = requests.get(f"{server.base_url}/_local/health", timeout=5)

    assert server.base_url.startswith("http://[::1]:")
    assert response.json()["ok"] is True


def test_hook_reaches_ipv6_server(monkeypatch):
    from airflow_provider_polyai.hooks.polyai import PolyAIHook

    with LocalPolyAIServer(host="::1") as server:
        monkeypatch.setenv("AIRFLOW_CONN_POLYAI_DEFAULT", server.connection_json())
        call_sid = PolyAIHook().trigger_call(NUMBER)

    assert SID_PATTERN.fullmatch(call_sid)
