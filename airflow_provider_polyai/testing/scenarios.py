"""How calls placed on the local PolyAI server progress, chosen per destination number."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Statuses the local server reports, in the order a call moves through them.
PHASES = ("queued", "ringing", "in-progress")


@dataclass(frozen=True)
class CallScenario:
    """The life of one call on the local server: how long each phase lasts and how it ends.

    Durations are in seconds of server time, before the server's ``time_scale`` is applied. A call
    that never connects (``busy``, ``no-answer``, ``failed``, ``cancelled``) skips ``in-progress``.

    :param status: terminal status the call ends with.
    :param reason: reason reported with the terminal status.
    """

    status: str = "completed"
    reason: str = "call ended normally"
    queued_seconds: float = 1.0
    ringing_seconds: float = 3.0
    in_progress_seconds: float = 12.0

    @property
    def connects(self) -> bool:
        """Whether the call is answered and goes through ``in-progress``."""
        return self.status == "completed"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CallScenario:
        """Build a scenario from the JSON the admin endpoint accepts; unknown keys are rejected."""
        allowed = {"status", "reason", "queued_seconds", "ringing_seconds", "in_progress_seconds"}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"unknown scenario keys {sorted(unknown)}; allowed: {sorted(allowed)}")
        return cls(**data)

    def status_at(self, elapsed: float) -> tuple[str, str]:
        """Return the status and reason ``elapsed`` seconds of server time after the call was placed."""
        phases: list[tuple[str, float]] = [("queued", self.queued_seconds), ("ringing", self.ringing_seconds)]
        if self.connects:
            phases.append(("in-progress", self.in_progress_seconds))
        for name, duration in phases:
            if elapsed < duration:
                return name, ""
            elapsed -= duration
        return self.status, self.reason


# The outcome of a call to a number nobody scripted is chosen by the number's last digit, so demos and
# tests can pick an outcome by picking a number.
DEFAULT_SCENARIOS_BY_LAST_DIGIT: dict[str, CallScenario] = {
    "0": CallScenario(),
    "1": CallScenario(),
    "2": CallScenario(),
    "3": CallScenario(in_progress_seconds=30.0),
    "4": CallScenario(status="no-answer", reason="no answer after 30 seconds", ringing_seconds=8.0),
    "5": CallScenario(status="busy", reason="destination busy"),
    "6": CallScenario(status="failed", reason="carrier rejected the call"),
    "7": CallScenario(status="cancelled", reason="cancelled before connection", ringing_seconds=1.0),
    "8": CallScenario(reason="customer confirmed the appointment"),
    "9": CallScenario(reason="customer asked to be called back"),
}


def default_scenario(to_number: str) -> CallScenario:
    """Return the scenario for a number nobody scripted, chosen by its last digit."""
    return DEFAULT_SCENARIOS_BY_LAST_DIGIT.get(to_number[-1:], CallScenario())
