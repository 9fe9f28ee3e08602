"""OutboundCallStatusSensor in poke mode against faults of the local server.

``poke()`` is called directly, one call per poll, as the base sensor does in poke mode. A run
through ``dag.test()`` (task fails without retries) is in ``test_bad_input.py``.
"""

from __future__ import annotations

import pytest

from airflow.sdk import PokeReturnValue

from airflow_provider_polyai.exceptions import AirflowFailException, PolyAIAuthenticationError
from airflow_provider_polyai.sensors.outbound_call import OutboundCallStatusSensor
from tests.reliability.conftest import TRANSIENT_STATUS_FAULTS, add_faults, admin, fast_hook, log_lines

BUSY_NUMBER = "+14155550105"
LONG_NUMBER = "+14155550103"


class _RecordingTaskInstance:
    """Stands in for the task instance: the sensor only pushes XComs through it."""

    def __init__(self) -> None:
        self.xcoms: dict[str, object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.xcoms[key] = value


def _sensor(call_sid: str) -> OutboundCallStatusSensor:
    sensor = OutboundCallStatusSensor(
        task_id="wait_for_call", call_sid=call_sid, mode="poke", poke_interval=0.02, in_progress_poke_interval=0.05
    )
    # The hook's own retries are under test elsewhere; two quick attempts keep each poke short.
    sensor._hook = lambda: fast_hook(max_attempts=2)  # type: ignore[method-assign]
    return sensor


@pytest.fixture
def placed(fast_server, connect):
    connect(fast_server)

    def place(number: str) -> str:
        return fast_hook().trigger_call(number)

    return fast_server, place


@pytest.mark.parametrize(("fault", "_code"), TRANSIENT_STATUS_FAULTS)
def test_sensor_poke_keeps_waiting_on_transient_fault(placed, fault, _code):
    server, place = placed
    call_sid = place(BUSY_NUMBER)
    # Two faults use up both of the hook's attempts in one poke.
    add_faults(server, [fault] * 2, call_sid=call_sid)
    sensor = _sensor(call_sid)
    ti = _RecordingTaskInstance()

    first = sensor.poke({"ti": ti})

    assert first is False
    assert ti.xcoms == {}


def test_sensor_poke_finishes_after_faults_pass(placed):
    server, place = placed
    call_sid = place(BUSY_NUMBER)
    add_faults(server, ["503-html", "503-html", "reset", "reset", "not-json", "not-json"], call_sid=call_sid)
    sensor = _sensor(call_sid)
    ti = _RecordingTaskInstance()

    results = [sensor.poke({"ti": ti}) for _ in range(3)]
    while not isinstance(results[-1], PokeReturnValue):
        results.append(sensor.poke({"ti": ti}))

    assert results[:3] == [False, False, False]
    assert results[-1].xcom_value["status"] == "busy"
    assert ti.xcoms["status"] == "busy"


def test_sensor_poke_warns_once_on_unknown_status(placed, capfd):
    server, place = placed
    call_sid = place(LONG_NUMBER)
    add_faults(server, ["status:on-hold"] * 3, call_sid=call_sid)
    sensor = _sensor(call_sid)
    capfd.readouterr()

    results = [sensor.poke({"ti": _RecordingTaskInstance()}) for _ in range(3)]

    assert results == [False, False, False]
    warnings = [line for line in log_lines(capfd) if "does not list" in line]
    assert len(warnings) == 1
    assert "'on-hold'" in warnings[0]


def test_sensor_poke_fails_on_revoked_token(placed):
    server, place = placed
    call_sid = place(LONG_NUMBER)
    sensor = _sensor(call_sid)
    assert sensor.poke({"ti": _RecordingTaskInstance()}) is False
    admin(server, "revoke-token", {"token": server.token})

    with pytest.raises(PolyAIAuthenticationError) as caught:
        sensor.poke({"ti": _RecordingTaskInstance()})

    assert isinstance(caught.value, AirflowFailException)
    answers = [entry["status"] for entry in server.state.requests if entry["method"] == "GET"]
    assert answers == [200, 401]


def test_sensor_poke_explains_404_for_call_seen_before(placed):
    server, place = placed
    call_sid = place(LONG_NUMBER)
    sensor = _sensor(call_sid)
    assert sensor.poke({"ti": _RecordingTaskInstance()}) is False
    admin(server, "forget-call", {"call_sid": call_sid})

    with pytest.raises(AirflowFailException) as caught:
        sensor.poke({"ti": _RecordingTaskInstance()})

    assert "was found before" in str(caught.value)
    assert "has expired" in str(caught.value)
    assert "different connector token" in str(caught.value)
