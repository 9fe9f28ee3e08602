"""The three API generations: settings, vocabularies, and every layer against the local server."""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import datetime

import pytest
import requests

from airflow.sdk import DAG

from airflow_provider_polyai.exceptions import (
    PolyAIAPIError,
    PolyAIAuthenticationError,
    PolyAICallNotFoundError,
    PolyAIInvalidInputError,
)
from airflow_provider_polyai.hooks.generations import AGENTS, LEGACY_V1, OUTBOUND
from airflow_provider_polyai.hooks.polyai import PolyAIHook
from airflow_provider_polyai.hooks.settings import ConnectionSettings, settings_from_connection
from airflow_provider_polyai.models import (
    ALL_FAILURE_STATUS_CHOICES,
    TERMINAL_OUTCOMES,
    VOCABULARIES,
    CallOutcome,
    CallStatus,
    next_poll_interval,
)
from airflow_provider_polyai.operators.outbound_call import TriggerOutboundCallOperator
from airflow_provider_polyai.sensors.outbound_call import OutboundCallStatusSensor
from airflow_provider_polyai.triggers.outbound_call import OutboundCallStatusTrigger
from airflow_provider_polyai.waiting import raise_if_failure, status_from_event, validate_failure_statuses
from tests.compat import AirflowFailException, dagbag_module
from tests.conftest import EXAMPLE_DAGS, sync_dag_to_db

SID = "OUT-550e8400-e29b-41d4-a716-446655440000"
COMPLETED_NUMBER = "+14155550150"
BUSY_NUMBER = "+14155550155"
GENERATIONS = ["outbound", "v1", "agents"]
NEWER_GENERATIONS = ["v1", "agents"]


def _connection(conn_id: str = "polyai_test", host: str | None = "http://127.0.0.1:1", **extra):
    from airflow.sdk import Connection

    return Connection(conn_id=conn_id, conn_type="polyai", host=host, password="tok", extra=json.dumps(extra))


def _use_generation(server, monkeypatch, generation: str) -> None:
    api_generation = None if generation == "outbound" else generation
    monkeypatch.setenv("AIRFLOW_CONN_POLYAI_DEFAULT", server.connection_json(api_generation=api_generation))


def _hook() -> PolyAIHook:
    return PolyAIHook(max_attempts=3, retry_min_wait=0.01, retry_max_wait=0.02)


def _requests(server, method: str | None = None) -> list[dict]:
    entries = requests.get(f"{server.base_url}/_local/requests", timeout=5).json()
    return [entry for entry in entries if method is None or entry["method"] == method]


def _admin(server, action: str, payload: dict) -> None:
    requests.post(f"{server.base_url}/_local/{action}", json=payload, timeout=5).raise_for_status()


def _wait_terminal(hook: PolyAIHook, call_sid: str) -> list[CallStatus]:
    seen = [hook.get_call_status(call_sid)]
    while not seen[-1].is_terminal:
        time.sleep(0.02)
        seen.append(hook.get_call_status(call_sid))
    return seen


class _RecordingTaskInstance:
    def __init__(self) -> None:
        self.xcoms: dict[str, object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.xcoms[key] = value


# -- vocabularies and outcomes ------------------------------------------------------------------


@pytest.mark.parametrize("generation", GENERATIONS)
def test_vocabulary_terminal_statuses_are_known(generation):
    vocabulary = VOCABULARIES[generation]

    assert vocabulary.terminal <= vocabulary.known


@pytest.mark.parametrize("generation", GENERATIONS)
def test_vocabulary_terminal_statuses_map_to_terminal_outcomes(generation):
    vocabulary = VOCABULARIES[generation]

    assert {vocabulary.outcome_of(status) for status in vocabulary.terminal} <= TERMINAL_OUTCOMES


@pytest.mark.parametrize("generation", GENERATIONS)
def test_vocabulary_open_statuses_map_to_open_outcomes(generation):
    vocabulary = VOCABULARIES[generation]
    open_statuses = vocabulary.known - vocabulary.terminal

    assert not {vocabulary.outcome_of(status) for status in open_statuses} & TERMINAL_OUTCOMES


def test_vocabularies_agree_on_shared_raw_statuses():
    # One poll schedule serves every generation only if no raw status is classified differently.
    for status in set().union(*(vocabulary.known for vocabulary in VOCABULARIES.values())):
        owners = [vocabulary for vocabulary in VOCABULARIES.values() if status in vocabulary.known]
        assert len({status in vocabulary.terminal for vocabulary in owners}) == 1, status
        assert len({status in vocabulary.pre_answer for vocabulary in owners}) == 1, status


@pytest.mark.parametrize(
    ("generation", "status", "outcome"),
    [
        ("outbound", "no-answer", "no-answer"),
        ("v1", "queued", "queued"),
        ("v1", "calling", "in-progress"),
        ("v1", "success", "completed"),
        ("v1", "failure", "failed"),
        ("agents", "QUEUED", "queued"),
        ("agents", "CALLING", "in-progress"),
        ("agents", "SUCCESS", "completed"),
        ("agents", "FAILURE", "failed"),
    ],
)
def test_call_status_outcome_maps_raw_status(generation, status, outcome):
    assert CallStatus(SID, status, generation=generation).outcome == outcome


@pytest.mark.parametrize(("generation", "status"), [("outbound", "success"), ("v1", "SUCCESS"), ("agents", "busy")])
def test_call_status_other_generation_status_is_unknown(generation, status):
    call_status = CallStatus(SID, status, generation=generation)

    assert call_status.outcome == CallOutcome.UNKNOWN.value
    assert call_status.is_terminal is False
    assert call_status.is_known is False


def test_call_status_defaults_to_outbound():
    assert CallStatus(SID, "completed").generation == "outbound"


def test_call_status_to_xcom_adds_outcome():
    assert CallStatus(SID, "SUCCESS", generation="agents").to_xcom() == {
        "call_sid": SID,
        "status": "SUCCESS",
        "reason": "",
        "outcome": "completed",
    }


@pytest.mark.parametrize(
    ("status", "expected"), [("QUEUED", 2.0), ("queued", 2.0), ("calling", 20.0), ("CALLING", 20.0)]
)
def test_next_poll_interval_newer_generations(status, expected):
    assert next_poll_interval(status, 2.0, 20.0) == expected


# -- failure_statuses ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["failed", "success", "FAILURE", "no-answer"])
def test_failure_statuses_accepts_any_generation(status):
    assert validate_failure_statuses([status]) == {status}


@pytest.mark.parametrize("status", ["calling", "CALLING", "in-progress", "unknown"])
def test_failure_statuses_rejects_open_status(status):
    with pytest.raises(PolyAIInvalidInputError) as excinfo:
        validate_failure_statuses([status])

    assert repr(status) in str(excinfo.value)


def test_failure_statuses_choices_are_outcomes_and_raw_terminals():
    assert ALL_FAILURE_STATUS_CHOICES == TERMINAL_OUTCOMES | {"success", "failure", "SUCCESS", "FAILURE"}


@pytest.mark.parametrize(
    ("generation", "status", "failure_statuses"),
    [
        ("v1", "failure", {"failed"}),
        ("v1", "failure", {"failure"}),
        ("agents", "FAILURE", {"failed"}),
        ("agents", "SUCCESS", {"completed"}),
        ("outbound", "busy", {"busy"}),
    ],
)
def test_raise_if_failure_matches_raw_or_outcome(generation, status, failure_statuses):
    with pytest.raises(AirflowFailException):
        raise_if_failure(CallStatus(SID, status, generation=generation), frozenset(failure_statuses))


def test_raise_if_failure_passes_other_outcome():
    raise_if_failure(CallStatus(SID, "SUCCESS", generation="agents"), frozenset({"failed", "FAILURE"}))


def test_raise_if_failure_rejects_other_generation_raw_status():
    with pytest.raises(PolyAIInvalidInputError) as excinfo:
        raise_if_failure(CallStatus(SID, "FAILURE", generation="agents"), frozenset({"failure"}))

    assert "['failure']" in str(excinfo.value)
    assert "'agents'" in str(excinfo.value)


def test_status_from_event_without_generation_is_outbound():
    event = {"event": "terminal", "call_sid": SID, "status": "completed", "reason": "", "message": ""}

    assert status_from_event(event).generation == "outbound"


def test_status_from_event_keeps_generation():
    event = {"event": "terminal", "call_sid": SID, "status": "FAILURE", "reason": "x", "generation": "agents"}

    assert status_from_event(event).outcome == "failed"


# -- connection settings ------------------------------------------------------------------------


def test_settings_default_generation_is_outbound():
    assert settings_from_connection(_connection()).generation is OUTBOUND


@pytest.mark.parametrize("value", ["v1", "V1", " v1 "])
def test_settings_reads_generation_case_insensitively(value):
    assert settings_from_connection(_connection(api_generation=value)).generation is LEGACY_V1


def test_settings_rejects_unknown_generation():
    with pytest.raises(PolyAIInvalidInputError) as excinfo:
        settings_from_connection(_connection(api_generation="v2"))

    assert "'v2'" in str(excinfo.value)
    assert "outbound, v1, agents" in str(excinfo.value)


def test_settings_agents_reads_agent_fields():
    settings = settings_from_connection(
        _connection(api_generation="agents", agent_id="AGENT-1", environment="live", variant_id="var-2")
    )

    assert settings.generation is AGENTS
    assert settings.agent_id == "AGENT-1"
    assert settings.environment == "live"
    assert settings.variant_id == "var-2"


def test_settings_agents_requires_agent_id():
    with pytest.raises(PolyAIInvalidInputError) as excinfo:
        settings_from_connection(_connection(api_generation="agents", environment="live"))

    assert "agent_id" in str(excinfo.value)


def test_settings_agents_requires_environment():
    with pytest.raises(PolyAIInvalidInputError) as excinfo:
        settings_from_connection(_connection(api_generation="agents", agent_id="a1"))

    assert "sandbox, pre-release, live" in str(excinfo.value)


def test_settings_agents_rejects_unknown_environment():
    with pytest.raises(PolyAIInvalidInputError) as excinfo:
        settings_from_connection(_connection(api_generation="agents", agent_id="a1", environment="Live"))

    assert "'Live'" in str(excinfo.value)


@pytest.mark.parametrize("agent_id", ["a/b", "a?b", "a#b", "a%2Fb", "..", "a..b", "a b", 12])
def test_settings_agents_rejects_unsafe_agent_id(agent_id):
    with pytest.raises(PolyAIInvalidInputError) as excinfo:
        settings_from_connection(_connection(api_generation="agents", agent_id=agent_id, environment="live"))

    assert repr(agent_id) in str(excinfo.value)


def test_settings_agent_fields_without_generation_rejected():
    with pytest.raises(PolyAIInvalidInputError) as excinfo:
        settings_from_connection(_connection(agent_id="a1", environment="live"))

    assert "api_generation" in str(excinfo.value)


def test_settings_form_nulls_mean_outbound():
    settings = settings_from_connection(
        _connection(api_generation=None, agent_id=None, environment=None, variant_id=None)
    )

    assert settings.generation is OUTBOUND


@pytest.mark.parametrize(
    ("generation", "expected"),
    [("v1", "https://api.us-1.platform.polyai.app"), ("agents", "https://api.us.poly.ai")],
)
def test_settings_empty_host_uses_generation_default(generation, expected):
    extra = {"api_generation": generation, "agent_id": "a1", "environment": "sandbox"}
    if generation != "agents":
        extra = {"api_generation": generation}

    assert settings_from_connection(_connection(host=None, **extra)).base_url == expected


def test_settings_agents_rejects_platform_host():
    connection = _connection(
        host="https://api.uk-1.platform.polyai.app", api_generation="agents", agent_id="a1", environment="live"
    )

    with pytest.raises(PolyAIInvalidInputError) as excinfo:
        settings_from_connection(connection)

    assert "https://api.us.poly.ai" in str(excinfo.value)


def test_settings_v1_rejects_agents_host():
    with pytest.raises(PolyAIInvalidInputError) as excinfo:
        settings_from_connection(_connection(host="https://api.eu.poly.ai", api_generation="v1"))

    assert "'api.eu.poly.ai'" in str(excinfo.value)


@pytest.mark.parametrize(
    ("generation", "header"),
    [(OUTBOUND, "X-PolyAi-Auth-Token"), (LEGACY_V1, "X-PolyAi-Auth-Token"), (AGENTS, "X-API-KEY")],
)
def test_settings_headers_use_generation_header(generation, header):
    settings = ConnectionSettings(base_url="http://127.0.0.1:1", token="tok", generation=generation)

    assert settings.headers[header] == "tok"


# -- request bodies and paths -------------------------------------------------------------------


def test_agents_paths_carry_agent_and_environment():
    settings = ConnectionSettings("http://x", "t", generation=AGENTS, agent_id="a1", environment="pre-release")

    assert AGENTS.trigger_path(settings) == "/v1/agents/a1/telephony/outbound-calls"
    assert AGENTS.status_path(settings, SID) == (
        f"/v1/agents/a1/telephony/outbound-calls/{SID}/status?environment=pre-release"
    )


def test_agents_body_uses_camel_case_and_environment():
    settings = ConnectionSettings("http://x", "t", generation=AGENTS, agent_id="a1", environment="live", variant_id="v")

    body = AGENTS.trigger_body(settings, "+442071838750", "GB", "tls_srtp", {"k": "v"})

    assert body == {
        "toNumber": "+442071838750",
        "environment": "live",
        "countryCode": "GB",
        "variantId": "v",
        "encryption": "tls_srtp",
        "metadata": {"k": "v"},
    }


def test_v1_body_leaves_out_unknown_region():
    settings = ConnectionSettings("http://x", "t", generation=LEGACY_V1)

    assert LEGACY_V1.trigger_body(settings, "+14155550150", "ZZ", None, None) == {"to_number": "+14155550150"}


@pytest.mark.parametrize(
    ("value", "expected"), [("TLS/SRTP", "tls_srtp"), ("UDP/RTP", "udp_rtp"), ("tls_rtp", "tls_rtp")]
)
def test_agents_encryption_spelled_snake_case(value, expected):
    assert AGENTS.check_encryption(value) == expected


@pytest.mark.parametrize(("generation", "value"), [(OUTBOUND, "UDP/SRTP"), (LEGACY_V1, "tls_srtp"), (AGENTS, "TLS")])
def test_encryption_rejects_other_generation_value(generation, value):
    with pytest.raises(PolyAIInvalidInputError) as excinfo:
        generation.check_encryption(value)

    assert repr(value) in str(excinfo.value)


def test_v1_encryption_accepts_udp_srtp():
    assert LEGACY_V1.check_encryption("UDP/SRTP") == "UDP/SRTP"


# -- hook against the local server --------------------------------------------------------------


@pytest.mark.polyai_time_scale(50)
@pytest.mark.parametrize("generation", GENERATIONS)
def test_hook_places_call_and_reads_statuses(polyai_server, monkeypatch, generation):
    _use_generation(polyai_server, monkeypatch, generation)
    hook = _hook()

    call_sid = hook.trigger_call(BUSY_NUMBER)
    seen = _wait_terminal(hook, call_sid)

    vocabulary = VOCABULARIES[generation]
    assert re.fullmatch(r"OUT-[0-9a-f-]{36}", call_sid)
    assert {status.status for status in seen} <= vocabulary.known
    assert "unknown" not in {status.outcome for status in seen}
    assert seen[-1].generation == generation
    assert seen[-1].reason == "destination busy"
    assert seen[-1].outcome == ("busy" if generation == "outbound" else "failed")


@pytest.mark.polyai_time_scale(50)
@pytest.mark.parametrize("generation", GENERATIONS)
async def test_hook_async_reads_generation_status(polyai_server, monkeypatch, generation):
    _use_generation(polyai_server, monkeypatch, generation)
    call_sid = _hook().trigger_call(COMPLETED_NUMBER)
    hook = _hook()

    try:
        status = await hook.aget_call_status(call_sid)
        while not status.is_terminal:
            await asyncio.sleep(0.02)
            status = await hook.aget_call_status(call_sid, max_attempts=1)
    finally:
        await hook.aclose()

    assert status.generation == generation
    assert status.outcome == "completed"
    assert status.status == {"outbound": "completed", "v1": "success", "agents": "SUCCESS"}[generation]


@pytest.mark.parametrize(
    ("generation", "path"),
    [
        ("outbound", "/outbound/trigger"),
        ("v1", "/v1/outbound-calling"),
        ("agents", "/v1/agents/local-agent/telephony/outbound-calls"),
    ],
)
def test_hook_trigger_uses_generation_path(polyai_server, monkeypatch, generation, path):
    _use_generation(polyai_server, monkeypatch, generation)

    _hook().trigger_call(COMPLETED_NUMBER)

    assert [entry["path"] for entry in _requests(polyai_server, "POST")] == [path]


def test_hook_agents_sends_body_fields(polyai_server, monkeypatch):
    conn = json.loads(polyai_server.connection_json(api_generation="agents", environment="live"))
    conn["extra"]["variant_id"] = "variant-7"
    monkeypatch.setenv("AIRFLOW_CONN_POLYAI_DEFAULT", json.dumps(conn))

    _hook().trigger_call("020 7183 8750", country_code="GB", encryption="UDP/RTP", metadata={"name": "Ann"})

    calls = requests.get(f"{polyai_server.base_url}/_local/calls", timeout=5).json()
    assert calls[0]["to_number"] == "+442071838750"
    assert calls[0]["country_code"] == "GB"
    assert calls[0]["encryption"] == "udp_rtp"
    assert calls[0]["environment"] == "live"
    assert calls[0]["variant_id"] == "variant-7"
    assert calls[0]["metadata"] == {"name": "Ann"}


@pytest.mark.parametrize("generation", NEWER_GENERATIONS)
def test_hook_rejects_non_string_metadata_before_sending(polyai_server, monkeypatch, generation):
    _use_generation(polyai_server, monkeypatch, generation)

    with pytest.raises(PolyAIInvalidInputError) as excinfo:
        _hook().trigger_call(COMPLETED_NUMBER, metadata={"attempt": 2, "name": "Ann"})

    assert "{'attempt': 'int'}" in str(excinfo.value)
    assert _requests(polyai_server) == []


def test_hook_outbound_keeps_non_string_metadata(polyai_connection):
    _hook().trigger_call(COMPLETED_NUMBER, metadata={"attempt": 2})

    calls = requests.get(f"{polyai_connection.base_url}/_local/calls", timeout=5).json()
    assert calls[0]["metadata"] == {"attempt": 2}


@pytest.mark.parametrize("generation", NEWER_GENERATIONS)
def test_hook_404_explains_short_retention(polyai_server, monkeypatch, generation):
    _use_generation(polyai_server, monkeypatch, generation)
    hook = _hook()
    call_sid = hook.trigger_call(COMPLETED_NUMBER)
    _admin(polyai_server, "forget-call", {"call_sid": call_sid})

    with pytest.raises(PolyAICallNotFoundError) as excinfo:
        hook.get_call_status(call_sid)

    assert "about 2 hours" in str(excinfo.value)


@pytest.mark.polyai_time_scale(100_000)
def test_server_expires_agents_status_after_retention(polyai_server, monkeypatch):
    _use_generation(polyai_server, monkeypatch, "agents")
    hook = _hook()
    call_sid = hook.trigger_call(COMPLETED_NUMBER)
    # 100,000 server seconds per second: the call ends and its 2 hours pass within 0.2 s.
    time.sleep(0.2)

    with pytest.raises(PolyAICallNotFoundError) as excinfo:
        hook.get_call_status(call_sid)

    assert "retention" in str(excinfo.value)


def test_hook_agents_other_environment_not_found(polyai_server, monkeypatch):
    _use_generation(polyai_server, monkeypatch, "agents")
    call_sid = _hook().trigger_call(COMPLETED_NUMBER)
    monkeypatch.setenv(
        "AIRFLOW_CONN_POLYAI_DEFAULT", polyai_server.connection_json(api_generation="agents", environment="live")
    )

    with pytest.raises(PolyAICallNotFoundError) as excinfo:
        _hook().get_call_status(call_sid)

    assert "environment 'live'" in str(excinfo.value)
    assert "environment that placed the call" in str(excinfo.value)


def test_hook_agents_forbidden_key(polyai_server, monkeypatch):
    _use_generation(polyai_server, monkeypatch, "agents")
    _admin(polyai_server, "forbid-token", {"token": polyai_server.token})

    with pytest.raises(PolyAIAuthenticationError) as excinfo:
        _hook().get_call_status(SID)

    assert excinfo.value.status_code == 403
    assert "lacks permission" in str(excinfo.value)
    assert "error id " in str(excinfo.value)


def test_hook_agents_trigger_without_connector(polyai_server, monkeypatch):
    _use_generation(polyai_server, monkeypatch, "agents")
    _admin(polyai_server, "agent-environments", {"local-agent": ["live"]})

    with pytest.raises(PolyAIAPIError) as excinfo:
        _hook().trigger_call(COMPLETED_NUMBER)

    assert not isinstance(excinfo.value, PolyAICallNotFoundError)
    assert "agent 'local-agent' in environment 'sandbox'" in str(excinfo.value)
    assert len(_requests(polyai_server, "POST")) == 1


def test_hook_agents_wrong_key_names_api_key(polyai_server, monkeypatch):
    conn = json.loads(polyai_server.connection_json("wrong-key", api_generation="agents"))
    monkeypatch.setenv("AIRFLOW_CONN_POLYAI_DEFAULT", json.dumps(conn))

    with pytest.raises(PolyAIAuthenticationError) as excinfo:
        _hook().get_call_status(SID)

    assert "API key" in str(excinfo.value)


def test_hook_agents_retries_502(polyai_server, monkeypatch):
    _use_generation(polyai_server, monkeypatch, "agents")
    _admin(polyai_server, "scenarios", {COMPLETED_NUMBER: {"queued_seconds": 600}})
    hook = _hook()
    call_sid = hook.trigger_call(COMPLETED_NUMBER)
    _admin(polyai_server, "faults", {"endpoint": "status", "faults": ["502"]})

    status = hook.get_call_status(call_sid)

    assert status.status == "QUEUED"
    assert len(_requests(polyai_server, "GET")) == 2


@pytest.mark.parametrize("generation", NEWER_GENERATIONS)
def test_hook_test_connection_per_generation(polyai_server, monkeypatch, generation):
    _use_generation(polyai_server, monkeypatch, generation)

    ok, message = _hook().test_connection()

    assert ok is True, message


def test_server_hides_call_from_other_generation(polyai_server, monkeypatch):
    _use_generation(polyai_server, monkeypatch, "v1")
    call_sid = _hook().trigger_call(COMPLETED_NUMBER)
    _use_generation(polyai_server, monkeypatch, "outbound")

    with pytest.raises(PolyAICallNotFoundError):
        _hook().get_call_status(call_sid)


# -- trigger, sensor, operator ------------------------------------------------------------------


async def _first_event(trigger: OutboundCallStatusTrigger) -> dict:
    events = trigger.run()
    try:
        event = await asyncio.wait_for(events.__anext__(), timeout=60)
    finally:
        await events.aclose()
    return event.payload


@pytest.mark.polyai_time_scale(50)
@pytest.mark.parametrize("generation", GENERATIONS)
async def test_trigger_event_carries_outcome_and_generation(polyai_server, monkeypatch, generation):
    _use_generation(polyai_server, monkeypatch, generation)
    call_sid = _hook().trigger_call(BUSY_NUMBER)
    trigger = OutboundCallStatusTrigger(call_sid=call_sid, poke_interval=0.02, in_progress_poke_interval=0.05)

    payload = await _first_event(trigger)

    assert payload["event"] == "terminal"
    assert payload["status"] == {"outbound": "busy", "v1": "failure", "agents": "FAILURE"}[generation]
    assert payload["outcome"] == ("busy" if generation == "outbound" else "failed")
    assert payload["generation"] == generation
    assert status_from_event(payload).outcome == payload["outcome"]


@pytest.mark.polyai_time_scale(50)
@pytest.mark.parametrize("generation", NEWER_GENERATIONS)
def test_sensor_poke_pushes_outcome(polyai_server, monkeypatch, generation):
    _use_generation(polyai_server, monkeypatch, generation)
    call_sid = _hook().trigger_call(BUSY_NUMBER)
    sensor = OutboundCallStatusSensor(
        task_id="wait", call_sid=call_sid, mode="poke", poke_interval=0.02, in_progress_poke_interval=0.05
    )
    context = {"ti": _RecordingTaskInstance()}

    while not (result := sensor.poke(context)):
        time.sleep(0.02)

    assert result.xcom_value["outcome"] == "failed"
    assert context["ti"].xcoms["outcome"] == "failed"
    assert context["ti"].xcoms["status"] == {"v1": "failure", "agents": "FAILURE"}[generation]
    assert context["ti"].xcoms["reason"] == "destination busy"


@pytest.mark.polyai_time_scale(50)
@pytest.mark.parametrize("generation", NEWER_GENERATIONS)
def test_dag_fails_on_failed_outcome(airflow_db, polyai_server, monkeypatch, request, generation):
    """A deferrable sensor and a waiting operator in one dag.test() run, with failure_statuses as outcomes."""
    _use_generation(polyai_server, monkeypatch, generation)
    dag_id = re.sub(r"\W", "_", request.node.name)
    options = {"poke_interval": 0.05, "in_progress_poke_interval": 0.1, "failure_statuses": ("failed",)}
    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
        place = TriggerOutboundCallOperator(task_id="place", to_number=COMPLETED_NUMBER)
        OutboundCallStatusSensor(task_id="wait", call_sid=place.output, deferrable=True, **options)
        TriggerOutboundCallOperator(
            task_id="call_and_wait", to_number=BUSY_NUMBER, wait_for_completion=True, deferrable=True, **options
        )
    sync_dag_to_db(dag)

    run = dag.test()

    wait = run.get_task_instance("wait")
    call_and_wait = run.get_task_instance("call_and_wait")
    assert wait.state == "success"
    assert wait.xcom_pull(task_ids="wait", key="outcome") == "completed"
    assert wait.xcom_pull(task_ids="wait")["outcome"] == "completed"
    assert call_and_wait.state == "failed"
    assert call_and_wait.xcom_pull(task_ids="call_and_wait", key="outcome") == "failed"
    assert call_and_wait.xcom_pull(task_ids="call_and_wait", key="reason") == "destination busy"


@pytest.mark.polyai_time_scale(20)
@pytest.mark.parametrize("generation", NEWER_GENERATIONS)
def test_example_dag_reports_outcomes(airflow_db, polyai_server, monkeypatch, tmp_path, generation):
    _use_generation(polyai_server, monkeypatch, generation)
    monkeypatch.setenv("POLYAI_REPORT_DIR", str(tmp_path))
    from airflow.utils.state import DagRunState

    DagBag = dagbag_module().DagBag

    dag = DagBag(dag_folder=str(EXAMPLE_DAGS)).get_dag("example_polyai_outbound_calls")

    run = dag.test()

    assert run.state == DagRunState.SUCCESS
    report = run.get_task_instance("report").xcom_pull(task_ids="report")
    assert [row["outcome"] for row in report] == ["completed", "completed", "failed", "failed", "failed"]
    assert {row["status"] for row in report} == (
        {"success", "failure"} if generation == "v1" else {"SUCCESS", "FAILURE"}
    )
    assert {entry["generation"] for entry in _requests(polyai_server)} == {generation}
