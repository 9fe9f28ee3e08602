"""Call statuses of the PolyAI outbound calling API, as values the rest of the provider shares.

PolyAI has three generations of the outbound calling API, each with its own raw statuses. Every raw
status also maps to one value of :class:`CallOutcome`, so a DAG can read the same outcome whichever
generation its connection uses. The outcome vocabulary:

===============  ===================================================  ==============  ===========  ===========
outcome          meaning                                              ``outbound``    ``v1``       ``agents``
===============  ===================================================  ==============  ===========  ===========
``queued``       accepted by PolyAI, not dialled yet                  ``queued``      ``queued``   ``QUEUED``
``ringing``      dialled, not answered yet                            ``ringing``     (none)       (none)
``in-progress``  under way: the primary generation means answered;    ``in-progress`` ``calling``  ``CALLING``
                 the newer two report one status from dialling to
                 hang-up, so there it may still be ringing
``completed``    the call connected and ended normally                ``completed``   ``success``  ``SUCCESS``
``failed``       the call did not succeed; the newer generations      ``failed``      ``failure``  ``FAILURE``
                 report busy and unanswered calls as failures too,
                 with the detail in the reason
``no-answer``    nobody answered                                      ``no-answer``   (none)       (none)
``busy``         the destination was busy                             ``busy``        (none)       (none)
``cancelled``    cancelled before it connected                        ``cancelled``   (none)       (none)
``unknown``      a raw status the generation does not document;       any other       any other    any other
                 never terminal, so polling goes on
===============  ===================================================  ==============  ===========  ===========

Terminal outcomes are ``completed``, ``failed``, ``no-answer``, ``busy`` and ``cancelled``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType


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

#: Name of the primary generation (``POST /outbound/trigger``), used when a connection names none.
DEFAULT_API_GENERATION = "outbound"

#: Generations a connection can choose with its ``api_generation`` extra field.
API_GENERATIONS = ("outbound", "v1", "agents")


class CallOutcome(str, Enum):
    """A call's status in the vocabulary shared by all API generations; see the module docstring."""

    QUEUED = "queued"
    RINGING = "ringing"
    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"
    FAILED = "failed"
    NO_ANSWER = "no-answer"
    BUSY = "busy"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"


#: Outcomes after which a call never changes again.
TERMINAL_OUTCOMES: frozenset[str] = frozenset(
    {
        CallOutcome.COMPLETED.value,
        CallOutcome.FAILED.value,
        CallOutcome.NO_ANSWER.value,
        CallOutcome.BUSY.value,
        CallOutcome.CANCELLED.value,
    }
)


class LegacyV1CallStatus(str, Enum):
    """A status that ``GET /v1/outbound-calling/{call_sid}/status`` documents; the last two are terminal."""

    QUEUED = "queued"
    CALLING = "calling"
    SUCCESS = "success"
    FAILURE = "failure"


class AgentsCallStatus(str, Enum):
    """A status that the Agents API's outbound-call status endpoint documents; the last two are terminal."""

    QUEUED = "QUEUED"
    CALLING = "CALLING"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"


@dataclass(frozen=True)
class StatusVocabulary:
    """The raw statuses of one API generation: their outcomes, which are terminal, how to poll them.

    :param generation: the generation's name, one of :data:`API_GENERATIONS`.
    :param outcomes: every documented raw status and the :class:`CallOutcome` value it maps to.
    :param terminal: raw statuses after which the call never changes.
    :param pre_answer: raw statuses polled on the short ``poke_interval``; every other non-terminal
        status is polled on ``in_progress_poke_interval``.
    """

    generation: str
    outcomes: Mapping[str, str]
    terminal: frozenset[str]
    pre_answer: frozenset[str]

    @property
    def known(self) -> frozenset[str]:
        """The raw statuses this generation documents."""
        return frozenset(self.outcomes)

    def outcome_of(self, status: str) -> str:
        """Return the outcome of a raw status; ``unknown`` for one the generation does not document."""
        return self.outcomes.get(status, CallOutcome.UNKNOWN.value)


def _vocabulary(
    generation: str, outcomes: Mapping[Enum, CallOutcome], terminal: Iterable[str], pre_answer: Iterable[str]
) -> StatusVocabulary:
    return StatusVocabulary(
        generation=generation,
        outcomes=MappingProxyType({status.value: outcome.value for status, outcome in outcomes.items()}),
        terminal=frozenset(terminal),
        pre_answer=frozenset(pre_answer),
    )


# The newer generations report ``calling`` from dialling until hang-up, a span that includes the
# conversation and so usually lasts minutes. It is polled on the long interval: a terminal status is
# final, so the long interval delays noticing the end by at most one interval, while the short one
# would send about five times the requests for the whole conversation against undisclosed rate limits.
VOCABULARIES: Mapping[str, StatusVocabulary] = MappingProxyType(
    {
        "outbound": _vocabulary(
            "outbound",
            {status: CallOutcome(status.value) for status in OutboundCallStatus},
            TERMINAL_STATUSES,
            PRE_ANSWER_STATUSES,
        ),
        "v1": _vocabulary(
            "v1",
            {
                LegacyV1CallStatus.QUEUED: CallOutcome.QUEUED,
                LegacyV1CallStatus.CALLING: CallOutcome.IN_PROGRESS,
                LegacyV1CallStatus.SUCCESS: CallOutcome.COMPLETED,
                LegacyV1CallStatus.FAILURE: CallOutcome.FAILED,
            },
            (LegacyV1CallStatus.SUCCESS.value, LegacyV1CallStatus.FAILURE.value),
            (LegacyV1CallStatus.QUEUED.value,),
        ),
        "agents": _vocabulary(
            "agents",
            {
                AgentsCallStatus.QUEUED: CallOutcome.QUEUED,
                AgentsCallStatus.CALLING: CallOutcome.IN_PROGRESS,
                AgentsCallStatus.SUCCESS: CallOutcome.COMPLETED,
                AgentsCallStatus.FAILURE: CallOutcome.FAILED,
            },
            (AgentsCallStatus.SUCCESS.value, AgentsCallStatus.FAILURE.value),
            (AgentsCallStatus.QUEUED.value,),
        ),
    }
)

#: Raw terminal statuses of every generation, plus the terminal outcomes: what ``failure_statuses``
#: may contain before the connection, and so the generation, is known.
ALL_FAILURE_STATUS_CHOICES: frozenset[str] = TERMINAL_OUTCOMES.union(
    *(vocabulary.terminal for vocabulary in VOCABULARIES.values())
)

# No raw status is pre-answer in one generation and polled differently in another (``queued`` is
# shared by the primary generation and v1 and pre-answer in both), so one set serves every
# generation and the poll schedule needs no connection.
_PRE_ANSWER_ANY_GENERATION: frozenset[str] = frozenset().union(
    *(vocabulary.pre_answer for vocabulary in VOCABULARIES.values())
)


@dataclass(frozen=True, slots=True)
class CallStatus:
    """The status of one outbound call at the moment it was read.

    :param call_sid: the call SID, for example ``OUT-550e8400-e29b-41d4-a716-446655440000``.
    :param status: the raw status string the API returned, kept as is even when undocumented.
    :param reason: the API's explanation of the status; empty when it gave none.
    :param generation: the API generation that reported the status, one of :data:`API_GENERATIONS`.
    """

    call_sid: str
    status: str
    reason: str = ""
    generation: str = DEFAULT_API_GENERATION

    @property
    def vocabulary(self) -> StatusVocabulary:
        """The raw statuses of the generation that reported this status."""
        return VOCABULARIES[self.generation]

    @property
    def is_terminal(self) -> bool:
        """Whether the status is final, so polling can stop."""
        return self.status in VOCABULARIES[self.generation].terminal

    @property
    def is_known(self) -> bool:
        """Whether the status is one the API documents."""
        return self.status in VOCABULARIES[self.generation].outcomes

    @property
    def outcome(self) -> str:
        """The status in the shared outcome vocabulary, a :class:`CallOutcome` value."""
        return VOCABULARIES[self.generation].outcome_of(self.status)

    def matches(self, statuses: frozenset[str] | set[str] | list[str] | tuple[str, ...]) -> bool:
        """Return whether ``statuses`` contains the raw status or its outcome."""
        return self.status in statuses or self.outcome in statuses

    def to_xcom(self) -> dict[str, str]:
        """Return the value pushed as the task's XCom return value."""
        return {"call_sid": self.call_sid, "status": self.status, "reason": self.reason, "outcome": self.outcome}


def next_poll_interval(status: str, poke_interval: float, in_progress_poke_interval: float) -> float:
    """Return the seconds to wait before polling a call again, following PolyAI's advice.

    PolyAI advises polling every 2–5 s while a call is ``queued`` or ``ringing`` and every 10–30 s
    once it is ``in-progress``. The newer generations' ``queued`` and ``QUEUED`` take the short
    interval, their ``calling`` and ``CALLING`` the long one. An undocumented status is polled on the
    longer interval.
    """
    if status in _PRE_ANSWER_ANY_GENERATION:
        return poke_interval
    return in_progress_poke_interval
