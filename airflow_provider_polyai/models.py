"""Call statuses of the PolyAI outbound calling API, as values the rest of the provider shares."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class OutboundCallStatus(str, Enum):
    """A status that ``GET /outbound/status/{call_sid}`` documents.

    ``queued``, ``ringing`` and ``in-progress`` change over time. The other five are terminal: PolyAI
    never changes them again, so polling stops there.
    """

    QUEUED = "queued"
    RINGING = "ringing"
    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"
    FAILED = "failed"
    NO_ANSWER = "no-answer"
    BUSY = "busy"
    CANCELLED = "cancelled"

    @classmethod
    def terminal_values(cls) -> frozenset[str]:
        """Return the raw values of the terminal statuses."""
        return TERMINAL_STATUSES

    @classmethod
    def is_terminal_value(cls, status: str) -> bool:
        """Return whether a raw status string is terminal; an undocumented value never is."""
        return status in TERMINAL_STATUSES


TERMINAL_STATUSES: frozenset[str] = frozenset(
    {
        OutboundCallStatus.COMPLETED.value,
        OutboundCallStatus.FAILED.value,
        OutboundCallStatus.NO_ANSWER.value,
        OutboundCallStatus.BUSY.value,
        OutboundCallStatus.CANCELLED.value,
    }
)

#: Statuses before the person answers, polled on the short interval.
PRE_ANSWER_STATUSES: frozenset[str] = frozenset(
    {OutboundCallStatus.QUEUED.value, OutboundCallStatus.RINGING.value}
)

KNOWN_STATUSES: frozenset[str] = frozenset(status.value for status in OutboundCallStatus)


@dataclass(frozen=True, slots=True)
class CallStatus:
    """The status of one outbound call at the moment it was read.

    :param call_sid: the call SID, for example ``OUT-550e8400-e29b-41d4-a716-446655440000``.
    :param status: the raw status string the API returned, kept as is even when undocumented.
    :param reason: the API's explanation of the status; empty when it gave none.
    """

    call_sid: str
    status: str
    reason: str = ""

    @property
    def is_terminal(self) -> bool:
        """Whether the status is final, so polling can stop."""
        return self.status in TERMINAL_STATUSES

    @property
    def is_known(self) -> bool:
        """Whether the status is one the API documents."""
        return self.status in KNOWN_STATUSES

    def to_xcom(self) -> dict[str, str]:
        """Return the value pushed as the task's XCom return value."""
        return {"call_sid": self.call_sid, "status": self.status, "reason": self.reason}


def next_poll_interval(status: str, poke_interval: float, in_progress_poke_interval: float) -> float:
    """Return the seconds to wait before polling a call again, following PolyAI's advice.

    PolyAI advises polling every 2–5 s while a call is ``queued`` or ``ringing`` and every 10–30 s
    once it is ``in-progress``. An undocumented status is polled on the longer interval.
    """
    if status in PRE_ANSWER_STATUSES:
        return poke_interval
    return in_progress_poke_interval
