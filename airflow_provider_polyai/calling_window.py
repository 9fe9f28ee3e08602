"""Calling windows: the local hours and weekdays in which a person may be called.

A :class:`CallingWindow` is checked in the destination's own time zone, which is read from the
phone number with :func:`phonenumbers.timezone.time_zones_for_number` unless a zone is given
explicitly. A number can map to several zones (a mobile number, a toll-free number, a country with
one calling code for several zones); the window must then be open in every one of them, so no one
in any of those zones is called outside it.

All arithmetic uses :mod:`zoneinfo`, so daylight-saving changes move the UTC instant of an opening
with the local clock. A window whose start falls in the hour skipped at a spring-forward change
opens at the first instant after the change.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from airflow_provider_polyai.exceptions import PolyAIInvalidInputError
from airflow_provider_polyai.validation import normalize_country_code, normalize_phone_number

WEEKDAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALL_WEEKDAYS = (0, 1, 2, 3, 4, 5, 6)

#: Zone name phonenumbers returns when it cannot place a number.
UNKNOWN_ZONE = "Etc/Unknown"

#: Days searched ahead for the next opening. Two weeks covers any weekly pattern, and a shift of
#: the local clock by a daylight-saving change in between.
SEARCH_HORIZON_DAYS = 15

_TIME_PATTERN = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?")


def _parse_time(name: str, value: Any) -> time:
    if isinstance(value, time):
        if value.tzinfo is not None:
            raise PolyAIInvalidInputError(
                f"Calling window {name} {value!r} has a time zone; give a local wall-clock time without "
                "one, because the zone comes from the number or the time_zone parameter."
            )
        return value
    if isinstance(value, str):
        match = _TIME_PATTERN.fullmatch(value.strip())
        if match:
            hour, minute, second = (int(part or 0) for part in match.groups())
            if hour < 24 and minute < 60 and second < 60:
                return time(hour, minute, second)
    raise PolyAIInvalidInputError(
        f"Calling window {name} {value!r} is invalid: use a time such as '09:00' or '20:30:00', or a datetime.time."
    )


def _parse_weekday(value: Any) -> int:
    if isinstance(value, bool):
        raise PolyAIInvalidInputError(f"Calling window weekday {value!r} is invalid.")
    if isinstance(value, int) and 0 <= value <= 6:
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text.isdigit() and int(text) <= 6:
            return int(text)
        for index, name in enumerate(WEEKDAY_NAMES):
            full_name = date(2024, 1, 1 + index).strftime("%A").lower()  # 2024-01-01 was a Monday
            if text in (name, full_name):
                return index
    raise PolyAIInvalidInputError(
        f"Calling window weekday {value!r} is invalid: use 0 (Monday) to 6 (Sunday) or a name such as "
        "'mon' or 'saturday'."
    )


def _parse_weekdays(value: Any) -> tuple[int, ...]:
    """Read weekdays from ints or names, or a string such as ``"mon-fri"``, ``"sat,sun"`` or ``"0-4"``."""
    if isinstance(value, str):
        days: list[int] = []
        for part in value.split(","):
            if "-" in part:
                first, last = (_parse_weekday(end) for end in part.split("-", 1))
                if last < first:
                    raise PolyAIInvalidInputError(
                        f"Calling window weekdays {value!r}: range {part.strip()!r} runs backwards; "
                        "write it as two ranges, for example 'fri-sun' as 'fri,sat,sun'."
                    )
                days.extend(range(first, last + 1))
            elif part.strip():
                days.append(_parse_weekday(part))
        parsed = tuple(days)
    elif isinstance(value, Iterable):
        parsed = tuple(_parse_weekday(day) for day in value)
    else:
        raise PolyAIInvalidInputError(
            f"Calling window weekdays must be a list of days or a string such as 'mon-fri', got {value!r}."
        )
    if not parsed:
        raise PolyAIInvalidInputError("Calling window weekdays is empty: allow at least one day.")
    return tuple(sorted(set(parsed)))


def _format_time(value: time) -> str:
    return value.strftime("%H:%M:%S" if value.second else "%H:%M")


@dataclass(frozen=True)
class CallingWindow:
    """Local wall-clock hours, on some weekdays, in which calls may be placed.

    The window opens at ``start`` and closes at ``end`` (excluded) on each day in ``weekdays``
    (0 is Monday, as :meth:`datetime.date.weekday` counts). When ``start`` is later than ``end``
    the window crosses midnight and belongs to the day it opens on: ``22:00``–``02:00`` with
    Friday allowed covers Friday 22:00 to Saturday 02:00. ``start`` equal to ``end`` is rejected;
    to call at any hour, pass no window.

    Strings are accepted for every field, and :meth:`from_value` reads the dict form that
    :meth:`to_dict` writes, so a window can be templated or kept in XCom and DAG params.

    :param start: local time the window opens.
    :param end: local time the window closes.
    :param weekdays: days the window opens on; every day by default.
    """

    start: time
    end: time
    weekdays: tuple[int, ...] = field(default=ALL_WEEKDAYS)

    def __post_init__(self) -> None:
        # Frozen, so normalised values are written with object.__setattr__.
        object.__setattr__(self, "start", _parse_time("start", self.start))
        object.__setattr__(self, "end", _parse_time("end", self.end))
        object.__setattr__(self, "weekdays", _parse_weekdays(self.weekdays))
        if self.start == self.end:
            raise PolyAIInvalidInputError(
                f"Calling window start and end are both {_format_time(self.start)}, which leaves no "
                "calling hours. Pass no calling window to allow calls at any hour."
            )

    @classmethod
    def from_value(cls, value: CallingWindow | Mapping[str, Any]) -> CallingWindow:
        """Return ``value`` as a window; a dict needs ``start`` and ``end`` and may have ``weekdays``."""
        if isinstance(value, CallingWindow):
            return value
        if not isinstance(value, Mapping):
            raise PolyAIInvalidInputError(
                f"calling_window must be a CallingWindow or a dict with 'start', 'end' and optional "
                f"'weekdays', got {type(value).__name__} {value!r}."
            )
        unknown = sorted(set(value) - {"start", "end", "weekdays"})
        if unknown:
            raise PolyAIInvalidInputError(
                f"calling_window has unknown keys {unknown}: use 'start', 'end' and 'weekdays'."
            )
        missing = [key for key in ("start", "end") if value.get(key) in (None, "")]
        if missing:
            raise PolyAIInvalidInputError(f"calling_window is missing {missing}: give local times such as '09:00'.")
        return cls(start=value["start"], end=value["end"], weekdays=value.get("weekdays", ALL_WEEKDAYS))

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-friendly form that :meth:`from_value` reads."""
        return {"start": _format_time(self.start), "end": _format_time(self.end), "weekdays": list(self.weekdays)}

    @property
    def crosses_midnight(self) -> bool:
        """Whether the window closes on the day after it opens."""
        return self.start > self.end

    def describe(self) -> str:
        """Return a short text form such as ``09:00-20:00 mon,tue,wed,thu,fri``."""
        days = ",".join(WEEKDAY_NAMES[day] for day in self.weekdays)
        return f"{_format_time(self.start)}-{_format_time(self.end)} {days}"

    def contains(self, local: datetime) -> bool:
        """Return whether the local wall-clock time ``local`` is inside the window."""
        wall = local.time().replace(tzinfo=None)
        weekday = local.weekday()
        if not self.crosses_midnight:
            return weekday in self.weekdays and self.start <= wall < self.end
        opened_today = weekday in self.weekdays and wall >= self.start
        opened_yesterday = (weekday - 1) % 7 in self.weekdays and wall < self.end
        return opened_today or opened_yesterday

    def openings(self, zone: ZoneInfo, since: datetime, days: int = SEARCH_HORIZON_DAYS) -> list[datetime]:
        """Return the UTC instants at which the window opens in ``zone`` within ``days`` after ``since``."""
        first_day = since.astimezone(zone).date() - timedelta(days=1)
        instants = []
        for offset in range(days + 2):
            day = first_day + timedelta(days=offset)
            if day.weekday() not in self.weekdays:
                continue
            instant = _first_instant_at_or_after(datetime.combine(day, self.start), zone)
            if instant >= since:
                instants.append(instant)
        return instants


def _first_instant_at_or_after(wall: datetime, zone: ZoneInfo) -> datetime:
    """Return the first UTC instant at which the local clock of ``zone`` reads ``wall`` or later.

    That is ``wall`` itself, except when a spring-forward change skips it: then it is the instant of
    the change. ``fold=0`` resolves an hour repeated at a fall-back change to its first occurrence.
    """
    before = wall.replace(tzinfo=zone, fold=0).astimezone(timezone.utc)
    if before.astimezone(zone).replace(tzinfo=None) == wall:
        return before
    # ``wall`` is in a gap. Read with the offset after the change (fold=1) it lands before the change,
    # read with the offset before it (fold=0) after the change; bisect to the change itself. Zone
    # changes fall on whole seconds, so one-second steps find it exactly.
    low = wall.replace(tzinfo=zone, fold=1).astimezone(timezone.utc)
    high = before
    if low > high:
        low, high = high, low
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        middle = middle.replace(microsecond=0)
        if middle.astimezone(zone).replace(tzinfo=None) >= wall:
            high = middle
        else:
            low = middle
    return high


def load_zone(name: str) -> ZoneInfo:
    """Return the IANA zone ``name``, or raise naming it when it is unknown."""
    if not isinstance(name, str) or not name.strip():
        raise PolyAIInvalidInputError(f"time_zone must be an IANA zone name such as 'Europe/London', got {name!r}.")
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise PolyAIInvalidInputError(
            f"time_zone {name!r} is not a known IANA time zone: use a name such as 'Europe/London' or "
            "'America/New_York'."
        ) from err


def time_zones_for(to_number: str, country_code: str | None = None, time_zone: str | None = None) -> tuple[str, ...]:
    """Return the IANA zones a calling window is checked in for ``to_number``.

    An explicit ``time_zone`` wins. Otherwise the zones come from the number. A number phonenumbers
    cannot place (zone ``Etc/Unknown``) raises rather than falling back to UTC or another guess,
    because a wrong guess could ring someone at night.
    """
    if time_zone:
        return (load_zone(time_zone).key,)
    # Imported here so that parsing a DAG file does not pay for importing phonenumbers.
    import phonenumbers
    from phonenumbers import timezone as phonenumber_timezones

    number = normalize_phone_number(to_number, normalize_country_code(country_code))
    zones = tuple(phonenumber_timezones.time_zones_for_number(phonenumbers.parse(number)))
    if not zones or UNKNOWN_ZONE in zones:
        raise PolyAIInvalidInputError(
            f"The time zone of {number} is unknown to phonenumbers, so its calling window cannot be "
            "checked. Pass time_zone (an IANA name such as 'Europe/London') for this number."
        )
    return zones


@dataclass(frozen=True)
class WindowCheck:
    """The result of checking a calling window at one instant.

    :param is_open: whether the window is open in every zone at ``checked_at``.
    :param checked_at: the UTC instant checked.
    :param opens_at: the next UTC instant the window is open in every zone; ``checked_at`` when open.
    :param local_times: the local time in each zone at ``checked_at``.
    """

    is_open: bool
    checked_at: datetime
    opens_at: datetime
    local_times: dict[str, datetime]

    def describe_local_times(self, instant: datetime | None = None) -> str:
        """Return the local times at ``instant`` (default ``checked_at``), as ``Europe/London 2026-03-29 08:12 Sun``.

        Several zones are joined by ``; ``.
        """
        shown = self.local_times
        if instant is not None:
            shown = {zone: instant.astimezone(local.tzinfo) for zone, local in self.local_times.items()}
        return "; ".join(f"{zone} {local:%Y-%m-%d %H:%M:%S %a}" for zone, local in shown.items())


def utcnow() -> datetime:
    """Return the current time in UTC: the clock calling windows are checked against."""
    return datetime.now(timezone.utc)


def check_calling_window(window: CallingWindow, zones: Iterable[str], now: datetime) -> WindowCheck:
    """Return whether ``window`` is open in all ``zones`` at ``now``, and when it next is.

    :param now: an aware datetime, the instant to check.
    :raises PolyAIInvalidInputError: if the window is never open in all zones at once within
        :data:`SEARCH_HORIZON_DAYS` days, for example 09:00-20:00 across zones 20 hours apart.
    """
    if now.tzinfo is None:
        raise ValueError(f"now must be an aware datetime, got naive {now!r}.")
    now = now.astimezone(timezone.utc)
    zone_infos = [load_zone(zone) for zone in zones]
    if not zone_infos:
        raise ValueError("zones is empty: give at least one IANA zone name.")
    local_times = {zone.key: now.astimezone(zone) for zone in zone_infos}

    def open_everywhere(instant: datetime) -> bool:
        return all(window.contains(instant.astimezone(zone)) for zone in zone_infos)

    if open_everywhere(now):
        return WindowCheck(True, now, now, local_times)

    # The window first opens in all zones at the moment the last of them opens, so the result is
    # one of the zones' own opening instants.
    # NOTE: a window that covers the hour repeated at a fall-back change is open again during the
    # repeat, but that re-entry is not an opening instant, so the search skips it and reports the
    # next regular opening instead. That errs on the late side.
    candidates = sorted({instant for zone in zone_infos for instant in window.openings(zone, now)})
    for instant in candidates:
        if open_everywhere(instant):
            return WindowCheck(False, now, instant, local_times)
    raise PolyAIInvalidInputError(
        f"Calling window {window.describe()} is never open in all of {', '.join(local_times)} at once "
        f"within {SEARCH_HORIZON_DAYS} days. Widen the window, or pass time_zone to check it in one zone."
    )
