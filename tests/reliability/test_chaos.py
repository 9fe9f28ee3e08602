"""Hundreds of calls watched at once while the local server fails a fifth of the requests at random.

Every call's outcome must arrive exactly once and match the scenario the server ran for its number.
Run with ``-s`` to print the counts that docs/reliability.md records.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict

import pytest

from airflow_provider_polyai.exceptions import PolyAICallOutcomeUnknownError, PolyAITransientError
from airflow_provider_polyai.testing.server import LocalPolyAIServer
from airflow_provider_polyai.triggers.outbound_call import OutboundCallStatusTrigger
from tests.reliability.conftest import admin, fast_hook, request_log

CALLS = 300
FAULT_RATE = 0.2
SEED = 20261204

# Every kind of fault a status request can meet, including a status the API does not document.
STATUS_FAULT_KINDS = [
    "500",
    "502-html",
    "503",
    "504-html",
    "429",
    "429:0.05",
    "reset",
    "slow:2",
    "truncated",
    "not-json",
    "status:on-hold",
]

# Only faults after which PolyAI certainly queued nothing, so every number is dialled exactly once
# and every call can be counted. Ambiguous trigger faults are in test_trigger_faults_never_double_dial.
SAFE_TRIGGER_FAULT_KINDS = ["500", "503", "503-html", "429", "429:0.05"]

NOT_QUEUED_TRIGGER_FAULTS = {"500", "503", "503-html", "429", "429:0.05"}
AMBIGUOUS_TRIGGER_FAULTS = ["502", "504-html", "reset", "slow:2", "truncated", "not-json"]

HANG_GUARD_SECONDS = 180


def _numbers(count: int) -> list[str]:
    # Consecutive numbers cycle through every last digit, so every scenario of the server is run.
    return [f"+1415555{index:04d}" for index in range(count)]


def _faults_by_kind(entries: list[dict], path_prefix: str) -> Counter:
    return Counter(entry["fault"] for entry in entries if "fault" in entry and entry["path"].startswith(path_prefix))


@pytest.fixture
def chaos_server():
    # At 4x a call lasts 1 to 8.5 s, long enough for about ten polls each while all are watched.
    with LocalPolyAIServer(time_scale=4) as server:
        yield server


async def _watch_all(call_sids: list[str]) -> dict[str, list]:
    deadline = time.time() + 120

    async def watch(call_sid: str) -> tuple[str, list]:
        trigger = OutboundCallStatusTrigger(
            call_sid=call_sid, poke_interval=0.1, in_progress_poke_interval=0.3, deadline=deadline
        )
        return call_sid, [event async for event in trigger.run()]

    results = await asyncio.wait_for(asyncio.gather(*(watch(sid) for sid in call_sids)), HANG_GUARD_SECONDS)
    return dict(results)


def test_chaos_every_outcome_arrives_once(chaos_server, connect):
    server = chaos_server
    connect(server, timeout=1.0)
    numbers = _numbers(CALLS)

    admin(
        server,
        "random-faults",
        {"probability": FAULT_RATE, "kinds": SAFE_TRIGGER_FAULT_KINDS, "endpoint": "trigger", "seed": SEED},
    )
    hook = fast_hook(max_attempts=10)
    call_sids = {number: hook.trigger_call(number) for number in numbers}
    admin(
        server,
        "random-faults",
        {"probability": FAULT_RATE, "kinds": STATUS_FAULT_KINDS, "endpoint": "status", "seed": SEED},
    )

    events = asyncio.run(_watch_all(list(call_sids.values())))
    admin(server, "random-faults", {})

    entries = request_log(server)
    lost, wrong, duplicated = [], [], []
    for number, call_sid in call_sids.items():
        scenario = server.state.calls[call_sid].scenario
        received = events.get(call_sid, [])
        terminal = [event.payload for event in received if event.payload["event"] == "terminal"]
        if not terminal:
            lost.append(call_sid)
            continue
        if len(received) > 1:
            duplicated.append(call_sid)
        if (terminal[0]["status"], terminal[0]["reason"]) != (scenario.status, scenario.reason):
            wrong.append((number, terminal[0]["status"], scenario.status))

    placed_per_number = Counter(call.to_number for call in server.state.calls.values())
    status_faults = _faults_by_kind(entries, "/outbound/status/")
    trigger_faults = _faults_by_kind(entries, "/outbound/trigger")
    summary = {
        "calls": CALLS,
        "fault_rate": FAULT_RATE,
        "status_requests": sum(1 for entry in entries if entry["path"].startswith("/outbound/status/")),
        "status_faults": dict(sorted(status_faults.items())),
        "trigger_requests": sum(1 for entry in entries if entry["path"] == "/outbound/trigger"),
        "trigger_faults": dict(sorted(trigger_faults.items())),
        "outcomes": dict(Counter(events[sid][0].payload["status"] for sid in call_sids.values() if events.get(sid))),
        "lost": len(lost),
        "wrong": len(wrong),
        "duplicated": len(duplicated),
    }
    print("\nchaos summary: " + json.dumps(summary, indent=1))

    assert lost == []
    assert wrong == []
    assert duplicated == []
    assert len(server.state.calls) == CALLS
    assert max(placed_per_number.values()) == 1
    # The run only proves something if the faults actually happened. How many status requests
    # there are depends on the machine's speed (a loaded machine polls less often), so the bound is
    # on the share of requests that failed plus a floor of one fault for every second call.
    assert sum(status_faults.values()) >= max(CALLS // 2, FAULT_RATE / 2 * summary["status_requests"])
    assert set(status_faults) == set(STATUS_FAULT_KINDS)
    assert sum(trigger_faults.values()) >= CALLS // 10


def test_trigger_faults_never_double_dial(chaos_server, connect):
    server = chaos_server
    connect(server, timeout=1.0)
    numbers = _numbers(60)
    max_attempts = 4
    admin(
        server,
        "random-faults",
        {
            "probability": 0.5,
            "kinds": sorted(NOT_QUEUED_TRIGGER_FAULTS) + AMBIGUOUS_TRIGGER_FAULTS,
            "endpoint": "trigger",
            "seed": SEED,
        },
    )
    hook = fast_hook(max_attempts=max_attempts)

    results: dict[str, object] = {}
    for number in numbers:
        try:
            results[number] = hook.trigger_call(number)
        except (PolyAICallOutcomeUnknownError, PolyAITransientError) as err:
            results[number] = err

    requests_by_number: dict[str, list[dict]] = defaultdict(list)
    for entry in request_log(server):
        requests_by_number[entry["to_number"]].append(entry)
    placed_by_number: dict[str, list[str]] = defaultdict(list)
    for call in server.state.calls.values():
        placed_by_number[call.to_number].append(call.call_sid)

    outcome_kinds = Counter(type(result).__name__ for result in results.values())
    print(f"\ntrigger faults: {dict(_faults_by_kind(request_log(server), '/outbound/trigger'))}")
    print(f"trigger outcomes: {dict(outcome_kinds)}")

    for number, result in results.items():
        faults = [entry.get("fault") for entry in requests_by_number[number]]
        assert len(placed_by_number[number]) <= 1, number
        assert len(faults) <= max_attempts, number
        # Every request but the last met a fault after which resending was safe.
        assert all(fault in NOT_QUEUED_TRIGGER_FAULTS for fault in faults[:-1]), (number, faults)
        if isinstance(result, str):
            assert placed_by_number[number] == [result], number
        elif isinstance(result, PolyAICallOutcomeUnknownError):
            assert faults[-1] in AMBIGUOUS_TRIGGER_FAULTS, (number, faults)
        else:
            assert len(faults) == max_attempts, (number, faults)
            assert placed_by_number[number] == [], number
    # The run only proves something if each kind of result happened.
    assert outcome_kinds["str"] > 0
    assert outcome_kinds["PolyAICallOutcomeUnknownError"] > 0
