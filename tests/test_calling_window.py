"""Calling windows: parsing, time zones from numbers, next openings across DST, and the operator."""

from __future__ import annotations

import json
import urllib.request
from datetime import datetime, time, timedelta, timezone
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

from airflow_provider_polyai import calling_window
from airflow_provider_polyai.calling_window import CallingWindow, check_calling_window, time_zones_for
from airflow_provider_polyai.exceptions import PolyAIInvalidInputError
from airflow_provider_polyai.operators.outbound_call import CALL_RECORD_KEY, TriggerOutboundCallOperator

UTC = timezone.utc
LONDON = ZoneInfo("Europe/London")
LOS_ANGELES = ZoneInfo("America/Los_Angeles")
UK_NUMBER = "+442079460100"
US_NUMBER = "+14155550100"
# ACMA's fictional mobile range; phonenumbers maps Australian mobiles to every Australian zone.
AU_MOBILE = "+61491570156"
TOLL_FREE = "+18005550100"
INTERNATIONAL_FREEPHONE = "+80012345678"
OFFICE_HOURS = CallingWindow(start=time(9), end=time(20))


# -- the window itself ------------------------------------------------------------------------------


def test_window_reads_strings_and_day_names():
    window = CallingWindow(start="9:00", end="20:30:15", weekdays="mon-wed,sat")

    assert window.start == time(9)
    assert window.end == time(20, 30, 15)
    assert window.weekdays == (0, 1, 2, 5)


def test_window_dict_round_trips():
    window = CallingWindow(start=time(22), end=time(2), weekdays=("fri", "saturday"))

    assert CallingWindow.from_value(window.to_dict()) == window


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"start": "09:00", "end": "09:00"}, "no calling hours"),
        ({"start": "25:00", "end": "09:00"}, "start '25:00' is invalid"),
        ({"start": "09:00", "end": "20:00", "weekdays": "fri-mon"}, "runs backwards"),
        ({"start": "09:00", "end": "20:00", "weekdays": ["funday"]}, "weekday 'funday' is invalid"),
        ({"start": "09:00", "end": "20:00", "weekdays": []}, "is empty"),
        ({"start": "09:00"}, "missing ['end']"),
        ({"start": "09:00", "end": "20:00", "days": "mon"}, "unknown keys ['days']"),
    ],
)
def test_window_rejects_invalid_value(value, message):
    with pytest.raises(PolyAIInvalidInputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        CallingWindow.from_value(value)


def test_window_crossing_midnight_belongs_to_opening_day():
    window = CallingWindow(start=time(22), end=time(2), weekdays=("fri",))
    friday_late = datetime(2026, 6, 5, 23, 0)
    saturday_early = datetime(2026, 6, 6, 1, 59)
    saturday_late = datetime(2026, 6, 6, 23, 0)
    friday_early = datetime(2026, 6, 5, 1, 0)

    assert window.contains(friday_late)
    assert window.contains(saturday_early)
    assert not window.contains(saturday_late)
    assert not window.contains(friday_early)


# -- time zones from the number ------------------------------------------------------------------------


def test_zones_single_zone_country():
    assert time_zones_for(UK_NUMBER) == ("Europe/London",)


def test_zones_multi_zone_number():
    zones = time_zones_for(AU_MOBILE)

    assert "Australia/Perth" in zones
    assert "Australia/Sydney" in zones


def test_zones_explicit_time_zone_wins():
    assert time_zones_for(AU_MOBILE, time_zone="Australia/Perth") == ("Australia/Perth",)


def test_zones_unknown_zone_raises():
    with pytest.raises(PolyAIInvalidInputError, match="Pass time_zone"):
        time_zones_for(INTERNATIONAL_FREEPHONE)


def test_zones_invalid_time_zone_raises():
    with pytest.raises(PolyAIInvalidInputError, match="'Mars/Olympus' is not a known IANA time zone"):
        time_zones_for(UK_NUMBER, time_zone="Mars/Olympus")


# -- checking the window and finding its next opening ---------------------------------------------------


def test_check_open_reports_local_time():
    now = datetime(2026, 6, 3, 10, 0, tzinfo=LONDON)

    check = check_calling_window(OFFICE_HOURS, ["Europe/London"], now)

    assert check.is_open
    assert check.describe_local_times() == "Europe/London 2026-06-03 10:00:00 Wed"


def test_check_closed_opens_next_morning():
    now = datetime(2026, 6, 3, 21, 0, tzinfo=LONDON)

    check = check_calling_window(OFFICE_HOURS, ["Europe/London"], now)

    assert not check.is_open
    assert check.opens_at == datetime(2026, 6, 4, 9, 0, tzinfo=LONDON)


def test_check_skips_disallowed_weekdays():
    weekdays_only = CallingWindow(start=time(9), end=time(20), weekdays="mon-fri")
    friday_evening = datetime(2026, 6, 5, 20, 0, tzinfo=LONDON)

    check = check_calling_window(weekdays_only, ["Europe/London"], friday_evening)

    assert check.opens_at == datetime(2026, 6, 8, 9, 0, tzinfo=LONDON)


def test_check_multi_zone_waits_for_last_zone_to_open():
    # 00:00 UTC in January: 11:00 in Sydney (UTC+11) but 06:30 on the Cocos Islands (UTC+6:30).
    now = datetime(2026, 1, 15, 0, 0, tzinfo=UTC)

    check = check_calling_window(OFFICE_HOURS, time_zones_for(AU_MOBILE), now)

    assert not check.is_open
    assert check.opens_at == datetime(2026, 1, 15, 2, 30, tzinfo=UTC)
    assert check.opens_at.astimezone(ZoneInfo("Indian/Cocos")).time() == time(9)


def test_check_multi_zone_never_open_raises():
    # Toll-free numbers map to zones from Guam (UTC+10) to Adak (UTC-10): no shared three hours.
    morning = CallingWindow(start=time(9), end=time(12))

    with pytest.raises(PolyAIInvalidInputError, match="never open in all of"):
        check_calling_window(morning, time_zones_for(TOLL_FREE), datetime(2026, 6, 1, tzinfo=UTC))


def test_check_crossing_midnight_opens_in_the_evening():
    night = CallingWindow(start=time(22), end=time(2), weekdays=("fri",))
    saturday_morning = datetime(2026, 6, 6, 2, 30, tzinfo=LONDON)

    check = check_calling_window(night, ["Europe/London"], saturday_morning)

    assert check.opens_at == datetime(2026, 6, 12, 22, 0, tzinfo=LONDON)


def test_check_crossing_midnight_open_after_midnight():
    night = CallingWindow(start=time(22), end=time(2), weekdays=("fri",))

    check = check_calling_window(night, ["Europe/London"], datetime(2026, 6, 6, 1, 30, tzinfo=LONDON))

    assert check.is_open


def test_check_us_spring_forward_opening_in_utc():
    # The US moved to daylight time on Sunday 2026-03-08: 09:00 that morning is UTC-7, not UTC-8.
    saturday_night = datetime(2026, 3, 7, 21, 0, tzinfo=LOS_ANGELES)

    check = check_calling_window(OFFICE_HOURS, time_zones_for(US_NUMBER), saturday_night)

    assert check.opens_at == datetime(2026, 3, 8, 16, 0, tzinfo=UTC)


def test_check_eu_spring_forward_opening_in_utc():
    # The UK moved to BST on Sunday 2026-03-29.
    saturday_night = datetime(2026, 3, 28, 21, 0, tzinfo=LONDON)

    check = check_calling_window(OFFICE_HOURS, time_zones_for(UK_NUMBER), saturday_night)

    assert check.opens_at == datetime(2026, 3, 29, 8, 0, tzinfo=UTC)


def test_check_us_fall_back_opening_in_utc():
    # The US returned to standard time on Sunday 2026-11-01.
    saturday_night = datetime(2026, 10, 31, 21, 0, tzinfo=LOS_ANGELES)

    check = check_calling_window(OFFICE_HOURS, time_zones_for(US_NUMBER), saturday_night)

    assert check.opens_at == datetime(2026, 11, 1, 17, 0, tzinfo=UTC)


def test_check_start_skipped_by_spring_forward_opens_at_change():
    # 02:30 does not exist in Los Angeles on 2026-03-08: clocks jump from 02:00 PST to 03:00 PDT.
    early = CallingWindow(start=time(2, 30), end=time(5))
    midnight = datetime(2026, 3, 8, 0, 0, tzinfo=LOS_ANGELES)

    check = check_calling_window(early, ["America/Los_Angeles"], midnight)

    assert check.opens_at == datetime(2026, 3, 8, 10, 0, tzinfo=UTC)


def test_check_rejects_naive_now():
    with pytest.raises(ValueError, match="aware"):
        check_calling_window(OFFICE_HOURS, ["Europe/London"], datetime(2026, 6, 1))


# -- the operator -----------------------------------------------------------------------------------------


class MemoryStateStore:
    """The task state store's get/set/delete, in memory, for calling execute() directly."""

    def __init__(self, **items):
        self.items = dict(items)

    def get(self, key, default=None):
        return self.items.get(key, default)

    def set(self, key, value):
        self.items[key] = value

    def delete(self, key):
        self.items.pop(key, None)


def make_context(store=None):
    pushed = {}
    ti = SimpleNamespace(try_number=1, xcom_push=lambda key, value: pushed.__setitem__(key, value))
    return {"ti": ti, "task_state_store": store if store is not None else MemoryStateStore()}


def server_calls(server):
    with urllib.request.urlopen(f"{server.base_url}/_local/calls", timeout=10) as response:
        return json.load(response)


@pytest.fixture
def frozen_now(monkeypatch):
    """Set the clock the operator checks calling windows against."""

    def freeze(instant: datetime) -> None:
        monkeypatch.setattr(calling_window, "utcnow", lambda: instant.astimezone(UTC))

    return freeze


def test_operator_defers_until_window_opens(polyai_connection, frozen_now):
    from airflow.providers.standard.triggers.temporal import DateTimeTrigger

    from tests.compat import TaskDeferred

    frozen_now(datetime(2026, 3, 28, 21, 0, tzinfo=LONDON))
    operator = TriggerOutboundCallOperator(task_id="call", to_number=UK_NUMBER, calling_window=OFFICE_HOURS)

    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(make_context())

    assert isinstance(deferred.value.trigger, DateTimeTrigger)
    assert deferred.value.trigger.moment == datetime(2026, 3, 29, 8, 0, tzinfo=UTC)
    assert deferred.value.method_name == "execute_after_window"
    assert server_calls(polyai_connection) == []


def test_operator_skips_outside_window(polyai_connection, frozen_now):
    from tests.compat import AirflowSkipException

    frozen_now(datetime(2026, 6, 3, 23, 0, tzinfo=LONDON))
    operator = TriggerOutboundCallOperator(
        task_id="call", to_number=UK_NUMBER, calling_window=OFFICE_HOURS, outside_window="skip"
    )

    with pytest.raises(AirflowSkipException, match="Europe/London 2026-06-03 23:00:00 Wed"):
        operator.execute(make_context())

    assert server_calls(polyai_connection) == []


def test_operator_dials_inside_window(polyai_connection, frozen_now):
    frozen_now(datetime(2026, 6, 3, 10, 0, tzinfo=LONDON))
    operator = TriggerOutboundCallOperator(task_id="call", to_number=UK_NUMBER, calling_window=OFFICE_HOURS)

    call_sid = operator.execute(make_context())

    assert [call["call_sid"] for call in server_calls(polyai_connection)] == [call_sid]


def test_operator_rechecks_window_on_resume(polyai_connection, frozen_now):
    from tests.compat import TaskDeferred

    # The trigger fired, but the clock now reads a time the window is closed again (a late resume).
    frozen_now(datetime(2026, 6, 3, 20, 30, tzinfo=LONDON))
    operator = TriggerOutboundCallOperator(task_id="call", to_number=UK_NUMBER, calling_window=OFFICE_HOURS)

    with pytest.raises(TaskDeferred) as deferred:
        operator.execute_after_window(make_context(), event=None)

    assert deferred.value.trigger.moment == datetime(2026, 6, 4, 8, 0, tzinfo=UTC)
    assert server_calls(polyai_connection) == []


def test_operator_reuses_recorded_call_outside_window(polyai_connection, frozen_now):
    frozen_now(datetime(2026, 6, 3, 23, 0, tzinfo=LONDON))
    recorded = "OUT-11111111-2222-3333-4444-555555555555"
    store = MemoryStateStore(**{CALL_RECORD_KEY: {"call_sid": recorded, "to_number": UK_NUMBER}})
    operator = TriggerOutboundCallOperator(task_id="call", to_number=UK_NUMBER, calling_window=OFFICE_HOURS)

    assert operator.execute(make_context(store)) == recorded
    assert server_calls(polyai_connection) == []


def test_operator_unknown_zone_fails_before_dialling(polyai_connection, frozen_now):
    frozen_now(datetime(2026, 6, 3, 10, 0, tzinfo=UTC))
    operator = TriggerOutboundCallOperator(
        task_id="call", to_number=INTERNATIONAL_FREEPHONE, calling_window=OFFICE_HOURS
    )

    with pytest.raises(PolyAIInvalidInputError, match="time zone of \\+80012345678 is unknown"):
        operator.execute(make_context())

    assert server_calls(polyai_connection) == []


def test_operator_time_zone_overrides_number(polyai_connection, frozen_now):
    from tests.compat import TaskDeferred

    # 10:00 in London is 02:00 in Los Angeles: closed there.
    frozen_now(datetime(2026, 6, 3, 10, 0, tzinfo=LONDON))
    operator = TriggerOutboundCallOperator(
        task_id="call", to_number=UK_NUMBER, calling_window=OFFICE_HOURS, time_zone="America/Los_Angeles"
    )

    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(make_context())

    assert deferred.value.trigger.moment == datetime(2026, 6, 3, 9, 0, tzinfo=LOS_ANGELES)


@pytest.mark.parametrize(
    "rendered",
    ['{"start": "09:00", "end": "20:00", "weekdays": [0, 1, 2]}', "{'start': '09:00', 'end': '20:00'}"],
)
def test_operator_reads_rendered_window_text(polyai_connection, frozen_now, rendered):
    frozen_now(datetime(2026, 6, 3, 10, 0, tzinfo=LONDON))
    operator = TriggerOutboundCallOperator(task_id="call", to_number=UK_NUMBER, calling_window=rendered)

    operator.execute(make_context())

    assert len(server_calls(polyai_connection)) == 1


def test_operator_rejects_unknown_outside_window_action():
    with pytest.raises(ValueError, match="outside_window must be one of"):
        TriggerOutboundCallOperator(task_id="call", to_number=UK_NUMBER, outside_window="wait")


def test_operator_stores_window_as_dict():
    operator = TriggerOutboundCallOperator(
        task_id="call", to_number=UK_NUMBER, calling_window=CallingWindow(time(9), time(20), "mon-fri")
    )

    assert operator.calling_window == {"start": "09:00", "end": "20:00", "weekdays": [0, 1, 2, 3, 4]}


# -- a deferral that resumes when the window opens, in a real DAG run -----------------------------------


class ClockBeforeOpeningOnFirstRead:
    """The real clock, except that its first read is at least 5 s before ``opens_at``.

    A slow start of dag.test() could otherwise reach the first window check after the window opened,
    and the run would dial without ever waiting.
    """

    def __init__(self, opens_at: datetime) -> None:
        self.opens_at = opens_at
        self.reads = 0

    def __call__(self) -> datetime:
        self.reads += 1
        now = datetime.now(UTC)
        if self.reads == 1:
            return min(now, self.opens_at - timedelta(seconds=5))
        return now


@pytest.mark.polyai_time_scale(20)
def test_campaign_waits_for_window_then_dials(airflow_db, polyai_connection, tmp_path, monkeypatch, capfd):
    from airflow.utils.state import DagRunState

    from tests.test_campaign import campaign_dag, read_report, write_contacts

    numbers = ["+442079460110", "+442079460120"]
    contacts = write_contacts(tmp_path / "contacts.csv", numbers)
    dag = campaign_dag()
    # The window opens a few seconds from now in London and stays open for an hour.
    opens_at = (datetime.now(UTC) + timedelta(seconds=8)).replace(microsecond=0)
    local_start = opens_at.astimezone(LONDON)
    window = {
        "start": local_start.strftime("%H:%M:%S"),
        "end": (local_start + timedelta(hours=1)).strftime("%H:%M:%S"),
        "weekdays": [0, 1, 2, 3, 4, 5, 6],
    }
    conf = {"contacts_csv": str(contacts), "calling_window": window, "report_dir": str(tmp_path / "reports")}
    # dag.test() runs tasks in this process, so the operator reads this clock.
    monkeypatch.setattr(calling_window, "utcnow", ClockBeforeOpeningOnFirstRead(opens_at))

    run = dag.test(run_conf=conf)

    assert run.state == DagRunState.SUCCESS
    assert [row["status"] for row in read_report(tmp_path / "reports")] == ["completed", "completed"]
    output = capfd.readouterr().out
    assert "is closed for +4420794601" in output
    assert "Wait for the calling window of +4420794601" in output
    triggers = [entry for entry in polyai_connection.state.requests if entry["method"] == "POST"]
    assert len(triggers) == 2
    assert all(entry["time"] >= opens_at.timestamp() for entry in triggers)
