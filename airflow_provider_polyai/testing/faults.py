"""Faults the local PolyAI server can inject, to test how clients survive a misbehaving API.

A fault is named by a short string:

========================  ===================================================================
``500`` … ``504``         that HTTP status with a JSON error body
``502-html`` …            that status with an HTML page, as a proxy or load balancer sends
``429``                   rate limited, no ``Retry-After``
``429:N``                 rate limited with ``Retry-After: N`` (seconds)
``400``/``401``/``404``   that client error with a JSON error body
``reset``                 the connection is closed without a response
``slow:N``                the response is delayed N seconds (of wall time, never scaled)
``truncated``             HTTP 200 with the JSON body cut in half
``not-json``              HTTP 200 with a plain-text body
``status:VALUE``          HTTP 200 reporting the status VALUE (for example one the API does not list)
========================  ===================================================================
"""

from __future__ import annotations

import random
import re
import threading
from dataclasses import dataclass, field
from typing import Any

_FAULT_PATTERN = re.compile(
    r"(?P<http>[45]\d\d)(?P<html>-html)?(?::(?P<retry_after>\d+(?:\.\d+)?))?"
    r"|reset|truncated|not-json|slow:(?P<slow>\d+(?:\.\d+)?)|status:(?P<status>[A-Za-z_-]{1,40})"
)

ENDPOINTS = ("trigger", "status", "any")


def validate_fault(fault: str) -> str:
    """Return ``fault`` if it is a fault name this module knows, else raise ``ValueError``."""
    if not isinstance(fault, str) or not _FAULT_PATTERN.fullmatch(fault):
        raise ValueError(f"unknown fault {fault!r}; see the table in airflow_provider_polyai.testing.faults")
    return fault


@dataclass
class FaultRule:
    """Faults served, one per matching request and in order, until the list is used up.

    A rule matches a request to ``endpoint`` and, when given, only for one call SID or one
    destination number.
    """

    faults: list[str]
    endpoint: str = "any"
    call_sid: str | None = None
    to_number: str | None = None

    def matches(self, endpoint: str, call_sid: str | None, to_number: str | None) -> bool:
        if self.endpoint != "any" and self.endpoint != endpoint:
            return False
        if self.call_sid is not None and self.call_sid != call_sid:
            return False
        return self.to_number is None or self.to_number == to_number


@dataclass
class RandomFaults:
    """Faults served at random: each matching request gets one with ``probability``."""

    probability: float
    kinds: list[str]
    endpoint: str = "status"
    rng: random.Random = field(default_factory=random.Random)


class FaultPlan:
    """The faults a server still has to serve; safe to use from several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._random: RandomFaults | None = None
        self.served: dict[str, int] = {}

    def add_rule(self, data: dict[str, Any]) -> FaultRule:
        """Add a rule from the admin endpoint's JSON; raise ``ValueError`` on a malformed one."""
        faults = data.get("faults")
        if not isinstance(faults, list) or not faults:
            raise ValueError("'faults' must be a non-empty list of fault names")
        endpoint = data.get("endpoint", "any")
        if endpoint not in ENDPOINTS:
            raise ValueError(f"'endpoint' must be one of {ENDPOINTS}, got {endpoint!r}")
        rule = FaultRule(
            faults=[validate_fault(fault) for fault in faults],
            endpoint=endpoint,
            call_sid=data.get("call_sid"),
            to_number=data.get("to_number"),
        )
        with self._lock:
            self._rules.append(rule)
        return rule

    def set_random(self, data: dict[str, Any] | None) -> None:
        """Serve faults at random from now on, or stop when ``data`` is ``None``."""
        if data is None:
            with self._lock:
                self._random = None
            return
        probability = float(data.get("probability", 0))
        if not 0 <= probability <= 1:
            raise ValueError(f"'probability' must be between 0 and 1, got {probability}")
        kinds = [validate_fault(kind) for kind in data.get("kinds", [])]
        if not kinds:
            raise ValueError("'kinds' must name at least one fault")
        endpoint = data.get("endpoint", "status")
        if endpoint not in ENDPOINTS:
            raise ValueError(f"'endpoint' must be one of {ENDPOINTS}, got {endpoint!r}")
        with self._lock:
            self._random = RandomFaults(probability, kinds, endpoint, random.Random(data.get("seed")))

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()
            self._random = None
            self.served.clear()

    def next_fault(self, endpoint: str, call_sid: str | None, to_number: str | None) -> str | None:
        """Return the fault to serve for this request, or ``None`` to answer normally."""
        with self._lock:
            fault = None
            for rule in self._rules:
                if rule.faults and rule.matches(endpoint, call_sid, to_number):
                    fault = rule.faults.pop(0)
                    break
            self._rules = [rule for rule in self._rules if rule.faults]
            chaos = self._random
            if fault is None and chaos is not None and chaos.endpoint in (endpoint, "any"):
                if chaos.rng.random() < chaos.probability:
                    fault = chaos.rng.choice(chaos.kinds)
            if fault is not None:
                self.served[fault] = self.served.get(fault, 0) + 1
            return fault


def parse_fault(fault: str) -> dict[str, Any]:
    """Split a fault name into its parts: ``http``, ``html``, ``retry_after``, ``slow``, ``status``."""
    match = _FAULT_PATTERN.fullmatch(fault)
    if match is None:
        raise ValueError(f"unknown fault {fault!r}")
    return {"name": fault, **match.groupdict()}
