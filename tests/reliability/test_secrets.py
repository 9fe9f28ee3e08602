"""The connector token never appears in logs, errors, XComs, trigger kwargs, reprs or serialized DAGs.

The local server here accepts only :data:`CANARY_TOKEN`, so every request in these tests carries it;
finding that string in any captured text is a leak.
"""

from __future__ import annotations

import asyncio
import json
import time
import traceback
from datetime import datetime, timedelta

import pytest

from airflow_provider_polyai.exceptions import PolyAIError
from airflow_provider_polyai.triggers.outbound_call import OutboundCallStatusTrigger
from tests.compat import dag_serializer
from tests.reliability.conftest import (
    CANARY_TOKEN,
    SLOW_FAULT,
    add_faults,
    admin,
    fast_hook,
    log_lines,
    run_trigger,
    sync_dag_to_db,
)

UNKNOWN_SID = "OUT-00000000-0000-4000-8000-000000000000"

STATUS_ERROR_FAULTS = ["400", "401", "404", "500", "502-html", "429:0.01", "reset", SLOW_FAULT, "truncated", "not-json"]
TRIGGER_ERROR_FAULTS = ["400", "401", "502", "503-html", "reset", SLOW_FAULT, "truncated"]


def _full_text(error: BaseException) -> str:
    return "".join(traceback.format_exception(error)) + repr(error)


@pytest.fixture
def server(canary_server, connect):
    connect(canary_server)
    return canary_server


def test_capture_sees_token_when_logged(server, capfd):
    # Control: proves the capture used below would show the token if anything logged it.
    fast_hook().log.warning("control line %s", CANARY_TOKEN)

    assert any(CANARY_TOKEN in line for line in log_lines(capfd))


@pytest.mark.parametrize("fault", STATUS_ERROR_FAULTS)
def test_status_errors_never_contain_token(server, capfd, fault):
    call_sid = fast_hook().trigger_call("+14155550103")
    add_faults(server, [fault] * 8, call_sid=call_sid)

    with pytest.raises(PolyAIError) as sync_error:
        fast_hook(max_attempts=2).get_call_status(call_sid)

    async def read() -> None:
        hook = fast_hook(max_attempts=2)
        try:
            await hook.aget_call_status(call_sid)
        finally:
            await hook.aclose()

    with pytest.raises(PolyAIError) as async_error:
        asyncio.run(read())

    assert CANARY_TOKEN not in _full_text(sync_error.value)
    assert CANARY_TOKEN not in _full_text(async_error.value)
    lines = log_lines(capfd)
    assert not [line for line in lines if CANARY_TOKEN in line]


@pytest.mark.parametrize("fault", TRIGGER_ERROR_FAULTS)
def test_trigger_call_errors_never_contain_token(server, capfd, fault):
    add_faults(server, [fault] * 3, endpoint="trigger")

    with pytest.raises(PolyAIError) as caught:
        fast_hook(max_attempts=2).trigger_call("+14155550103")

    assert CANARY_TOKEN not in _full_text(caught.value)
    assert not [line for line in log_lines(capfd) if CANARY_TOKEN in line]


def test_connection_errors_never_contain_token(monkeypatch, name_lookups):
    hosts = ["http://example.invalid", "example.invalid", "https://example.invalid/path", "ftp://example.invalid"]
    for host in hosts:
        monkeypatch.setenv(
            "AIRFLOW_CONN_POLYAI_LEAKY", json.dumps({"conn_type": "polyai", "host": host, "password": CANARY_TOKEN})
        )
        with pytest.raises(PolyAIError) as caught:
            fast_hook("polyai_leaky").get_call_status(UNKNOWN_SID)

        assert CANARY_TOKEN not in _full_text(caught.value), host


def test_refused_connection_error_never_contains_token(canary_server, connect):
    connect(canary_server)
    call_sid = fast_hook().trigger_call("+14155550103")
    canary_server.stop()

    with pytest.raises(PolyAIError) as caught:
        fast_hook(max_attempts=1).get_call_status(call_sid)

    assert CANARY_TOKEN not in _full_text(caught.value)


@pytest.mark.parametrize("fault", ["500", "502-html", SLOW_FAULT, "reset", "429:0.01", "not-json", "status:on-hold"])
def test_trigger_logs_never_contain_token(server, capfd, fault):
    call_sid = fast_hook().trigger_call("+14155550105")
    add_faults(server, [fault] * 3, call_sid=call_sid)
    capfd.readouterr()

    events = run_trigger(
        OutboundCallStatusTrigger(
            call_sid, poke_interval=0.02, in_progress_poke_interval=0.05, deadline=time.time() + 30
        )
    )

    lines = log_lines(capfd)
    assert any(call_sid in line for line in lines)
    assert not [line for line in lines if CANARY_TOKEN in line]
    assert CANARY_TOKEN not in json.dumps([event.payload for event in events])


@pytest.mark.parametrize("admin_action", ["revoke-token", "forget-call"])
def test_trigger_error_events_never_contain_token(server, capfd, admin_action):
    call_sid = fast_hook().trigger_call("+14155550103")
    admin(server, admin_action, {"token": CANARY_TOKEN, "call_sid": call_sid})
    capfd.readouterr()

    events = run_trigger(OutboundCallStatusTrigger(call_sid, poke_interval=0.02, deadline=time.time() + 30))

    assert [event.payload["event"] for event in events] == ["error"]
    assert CANARY_TOKEN not in json.dumps([event.payload for event in events])
    assert not [line for line in log_lines(capfd) if CANARY_TOKEN in line]


def test_trigger_timeout_event_never_contains_token(server, capfd):
    call_sid = fast_hook().trigger_call("+14155550103")
    admin(server, "random-faults", {"probability": 1.0, "kinds": [SLOW_FAULT], "seed": 3})
    capfd.readouterr()

    events = run_trigger(OutboundCallStatusTrigger(call_sid, poke_interval=0.02, deadline=time.time() + 1.2))

    assert [event.payload["event"] for event in events] == ["timeout"]
    assert CANARY_TOKEN not in json.dumps([event.payload for event in events])
    assert not [line for line in log_lines(capfd) if CANARY_TOKEN in line]


def test_reprs_and_trigger_kwargs_never_contain_token(server):
    hook = fast_hook()
    settings = hook.get_settings()
    trigger = OutboundCallStatusTrigger(UNKNOWN_SID, deadline=time.time() + 60)

    assert settings.token == CANARY_TOKEN
    assert CANARY_TOKEN not in repr(settings)
    assert CANARY_TOKEN not in repr(hook)
    assert CANARY_TOKEN not in repr(trigger)
    assert CANARY_TOKEN not in json.dumps(trigger.serialize())


def test_dag_run_never_exposes_token(airflow_db, server, capfd):
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.models.xcom import XComModel
    from airflow.sdk import DAG, task
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState

    from airflow_provider_polyai.operators.outbound_call import TriggerOutboundCallOperator
    from airflow_provider_polyai.sensors.outbound_call import OutboundCallStatusSensor

    # Error paths run with the token too: an ambiguous trigger fault, proxy pages, an unknown SID.
    add_faults(server, ["502"], endpoint="trigger", to_number="+14155550106")
    fast = {"poke_interval": 0.05, "in_progress_poke_interval": 0.1}
    with DAG("polyai_reliability_secrets", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
        place = TriggerOutboundCallOperator(
            task_id="place",
            to_number="+14155550100",
            metadata={"run_id": "{{ run_id }}"},
            wait_for_completion=True,
            deferrable=True,
            **fast,
        )
        OutboundCallStatusSensor(task_id="wait_poke", call_sid=place.output, mode="poke", **fast)
        OutboundCallStatusSensor(task_id="wait_deferred", call_sid=place.output, deferrable=True, **fast)
        TriggerOutboundCallOperator(task_id="place_ambiguous", to_number="+14155550106", **fast)
        OutboundCallStatusSensor(
            task_id="wait_unknown", call_sid=UNKNOWN_SID, mode="poke", timeout=timedelta(seconds=30), **fast
        )

        @task
        def control() -> None:
            print("secret-scan-control")

        control()
    sync_dag_to_db(dag)
    capfd.readouterr()

    run = dag.test()

    output = "\n".join(log_lines(capfd))
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["place"] == TaskInstanceState.SUCCESS
    assert states["wait_deferred"] == TaskInstanceState.SUCCESS
    assert states["place_ambiguous"] == TaskInstanceState.FAILED
    assert states["wait_unknown"] == TaskInstanceState.FAILED
    assert "secret-scan-control" in output
    assert "was not sent again" in output
    assert CANARY_TOKEN not in output

    with create_session() as session:
        xcoms = session.query(XComModel).filter(XComModel.dag_id == dag.dag_id, XComModel.run_id == run.run_id).all()
        rendered = (
            session.query(RenderedTaskInstanceFields)
            .filter(RenderedTaskInstanceFields.dag_id == dag.dag_id, RenderedTaskInstanceFields.run_id == run.run_id)
            .all()
        )
        stored_dag = session.query(SerializedDagModel).filter(SerializedDagModel.dag_id == dag.dag_id).first()
        xcom_text = json.dumps([row.value for row in xcoms], default=str)
        rendered_text = json.dumps([row.rendered_fields for row in rendered], default=str)
        stored_dag_text = json.dumps(stored_dag.data, default=str)

    assert run.run_id in rendered_text
    assert CANARY_TOKEN not in rendered_text
    assert "call_sid" in xcom_text
    assert CANARY_TOKEN not in xcom_text
    assert CANARY_TOKEN not in stored_dag_text
    assert CANARY_TOKEN not in json.dumps(dag_serializer().serialize_dag(dag), default=str)
