"""A calling campaign: read contacts from a CSV, call each one inside its calling window, report.

Steps:

1. ``load_contacts`` reads the CSV (columns ``contact_id``, ``name``, ``to_number`` and an optional
   ``time_zone``) and checks every number before any call is placed.
2. ``place_call`` is one mapped task instance per contact. Each checks the calling window in the
   contact's own time zone, defers until it opens, then places the call. Airflow paces the campaign:
   the pool's slots cap how many contacts are dialled at once, across every campaign that uses the
   same pool.
3. ``wait_for_calls`` waits for all the calls with one trigger, without holding a worker slot.
4. ``report`` writes one CSV row per contact (contact, call SID, status, reason) and a summary by
   outcome, and prints both.

A retried or cleared campaign never rings a contact twice once PolyAI accepted the call: each
``place_call`` instance keeps its call SID in Airflow's task state store and reuses it.

The bundled CSV contains synthetic numbers in ranges reserved for fiction. Against the local PolyAI
server a number's last digit picks the outcome. See docs/campaigns.md for settings.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Param, get_current_context, task

from airflow_provider_polyai.operators.outbound_call import TriggerOutboundCallOperator
from airflow_provider_polyai.sensors.outbound_calls_batch import OutboundCallsBatchSensor

DAG_ID = "example_polyai_campaign"
CONTACTS_CSV = Path(__file__).parent / "data" / "campaign_contacts.csv"

# Pacing is Airflow's own. These are read when the DAG file is parsed, so set them in the
# environment of the scheduler and workers. The pool must exist (Admin > Pools, or
# `airflow pools set polyai_calls 4 "PolyAI outbound calls"`). A pool without include_deferred
# frees the slot of a contact deferred until its calling window opens. max_active_tis_per_dagrun
# counts deferred instances, so contacts waiting for their window would hold back the others.
POOL = os.environ.get("POLYAI_CAMPAIGN_POOL", "default_pool")
RETRY_DELAY = timedelta(seconds=float(os.environ.get("POLYAI_CAMPAIGN_RETRY_DELAY_SECONDS", "30")))

REPORT_FIELDS = ("contact_id", "name", "to_number", "call_sid", "status", "reason")

#: Report status of a contact that was not called.
NOT_CALLED = "not-called"

#: Report status and reason of a contact without a call SID, by the state of its place_call instance.
NOT_PLACED_REASONS = {
    "skipped": (NOT_CALLED, "outside the calling window"),
    "upstream_failed": (NOT_CALLED, "an upstream task failed"),
    # Either PolyAI rejected the request, or it may have accepted it without a response reaching us.
    "failed": ("place-failed", "no call SID: see the place_call log; the call may have been placed"),
}


def _call_kwargs(contact: dict[str, Any]) -> dict[str, Any]:
    """Return the ``place_call`` arguments for one contact."""
    return {
        "to_number": contact["to_number"],
        "time_zone": contact["time_zone"] or None,
        "metadata": {"contact_id": contact["contact_id"]},
    }


with DAG(
    dag_id=DAG_ID,
    description="Call a list of contacts inside their local calling window and report the outcomes.",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["example", "polyai"],
    params={
        "contacts_csv": Param(str(CONTACTS_CSV), type="string", description="CSV file of contacts to call."),
        "max_contacts": Param(None, type=["null", "integer"], minimum=1, description="Call only the first N contacts."),
        "calling_window": Param(
            {"start": "09:00", "end": "20:00", "weekdays": "mon-fri"},
            type=["null", "object"],
            description="Local hours and weekdays to call in; null calls at any hour.",
        ),
        "time_zone": Param(
            None,
            type=["null", "string"],
            description="IANA zone to check every contact's window in, instead of the number's zones.",
        ),
        "report_dir": Param(
            None, type=["null", "string"], description="Report folder; default $POLYAI_REPORT_DIR or polyai_reports."
        ),
    },
) as dag:

    @task
    def load_contacts(contacts_csv: str, max_contacts: str = "None", time_zone: str = "None") -> list[dict]:
        """Read and check the contacts; fail before any call if a row is invalid.

        ``max_contacts`` and ``time_zone`` arrive rendered as text, ``"None"`` when unset.
        """
        from airflow_provider_polyai.calling_window import time_zones_for

        limit = None if max_contacts in ("", "None") else int(max_contacts)
        zone_override = None if time_zone in ("", "None") else time_zone
        with open(contacts_csv, newline="") as file:
            rows = list(csv.DictReader(file))
        if limit:
            rows = rows[:limit]

        contacts = []
        seen: dict[str, int] = {}
        for line, row in enumerate(rows, start=2):
            number = (row.get("to_number") or "").strip()
            zone = zone_override or (row.get("time_zone") or "").strip() or None
            try:
                # Checks the number and that its calling window can be placed in a time zone.
                time_zones_for(number, time_zone=zone)
            except ValueError as err:
                raise ValueError(f"{contacts_csv} line {line}: {err}") from None
            if number in seen:
                raise ValueError(
                    f"{contacts_csv} line {line}: {number} is also on line {seen[number]}; "
                    "remove the duplicate so the contact is called once."
                )
            seen[number] = line
            contacts.append(
                {
                    "contact_id": row.get("contact_id") or f"line-{line}",
                    "name": row.get("name") or "",
                    "to_number": number,
                    "time_zone": zone,
                }
            )
        print(f"Loaded {len(contacts)} contacts from {contacts_csv}")
        return contacts

    contacts = load_contacts(
        contacts_csv="{{ params.contacts_csv }}",
        max_contacts="{{ params.max_contacts }}",
        time_zone="{{ params.time_zone }}",
    )

    place_call = TriggerOutboundCallOperator.partial(
        task_id="place_call",
        # Rendered as JSON text ("null" for no window), which the operator reads back into a dict.
        calling_window="{{ params.calling_window | tojson }}",
        outside_window="defer",
        pool=POOL,
        retries=2,
        retry_delay=RETRY_DELAY,
    ).expand_kwargs(contacts.map(_call_kwargs))

    # all_done: waits for the calls that were placed even when some contacts could not be called.
    wait_for_calls = OutboundCallsBatchSensor(
        task_id="wait_for_calls",
        trigger_rule="all_done",
        call_sids=place_call.output,
        deferrable=True,
        poke_interval=3,
        in_progress_poke_interval=15,
        timeout=timedelta(hours=2),
        # Airflow rejects end_from_trigger=True when a plugin registers listeners, so resume on a worker.
        end_from_trigger=False,
    )

    @task(trigger_rule="all_done")
    def report(contacts: list[dict], report_dir: str = "None") -> dict[str, Any]:
        """Write the per-contact report and the summary by outcome; return the summary."""
        context = get_current_context()
        ti = context["ti"]
        run_id = context["run_id"]
        indexes = list(range(len(contacts)))
        call_sids = ti.xcom_pull(task_ids="place_call", map_indexes=indexes) if indexes else []
        # {call_sid: {"status", "reason"}}, pushed by the batch sensor even when it fails.
        outcome_by_sid = ti.xcom_pull(task_ids="wait_for_calls") or {}
        states = _map_index_states(ti, run_id, "place_call")

        rows = []
        for index, contact in enumerate(contacts):
            call_sid = call_sids[index] if index < len(call_sids) else None
            row = {key: contact[key] for key in ("contact_id", "name", "to_number")}
            if not call_sid:
                state = states.get(index, "unknown")
                status, reason = NOT_PLACED_REASONS.get(state, (NOT_CALLED, f"place_call ended in state {state}"))
                rows.append({**row, "call_sid": "", "status": status, "reason": reason})
                continue
            outcome = outcome_by_sid.get(call_sid)
            if outcome is None:
                rows.append({**row, "call_sid": call_sid, "status": "unknown", "reason": "no outcome recorded"})
            else:
                rows.append({**row, "call_sid": call_sid, "status": outcome["status"], "reason": outcome["reason"]})

        if report_dir in ("", "None"):
            report_dir = os.environ.get("POLYAI_REPORT_DIR", "polyai_reports")
        folder = Path(report_dir)
        folder = folder / run_id.replace(":", "_").replace("+", "_")
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / "calls.csv").open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=REPORT_FIELDS)
            writer.writeheader()
            writer.writerows(rows)

        counts = Counter(row["status"] for row in rows)
        summary = format_summary(counts, len(rows))
        (folder / "summary.txt").write_text(summary + "\n")
        print(summary)
        print(f"Report written to {folder / 'calls.csv'} and {folder / 'summary.txt'}")
        return {"report_dir": str(folder), "contacts": len(rows), "by_status": dict(counts)}

    wait_for_calls >> report(contacts, report_dir="{{ params.report_dir }}")


def _map_index_states(ti: Any, run_id: str, task_id: str) -> dict[int, str]:
    """Return the state of each map index of ``task_id`` in this run."""
    states = ti.get_task_states(dag_id=ti.dag_id, task_ids=[task_id], run_ids=[run_id]).get(run_id, {})
    result = {}
    for key, state in states.items():
        # Keys are "<task_id>_<map_index>" for mapped tasks.
        prefix, _, index = key.rpartition("_")
        if prefix == task_id and index.isdigit():
            result[int(index)] = state
    return result


def format_summary(counts: Counter, total: int) -> str:
    """Return the outcome table a person reads at a glance: status, count, share, largest first."""
    lines = [f"Campaign summary: {total} contacts", f"  {'OUTCOME':<12} {'CALLS':>6} {'SHARE':>7}"]
    for status, count in counts.most_common():
        share = 100.0 * count / total if total else 0.0
        lines.append(f"  {status:<12} {count:>6} {share:>6.1f}%")
    return "\n".join(lines)
