"""Run the example DAG on a real Airflow against the local PolyAI server and print what happened.

Steps: start the local server on a free loopback port, create a throwaway SQLite metadata database,
run ``airflow dags test example_polyai_outbound_calls``, print the report the DAG wrote, then print
how often the server was polled in each call phase, and stop the server. Airflow's own output goes to
``.demo/dags-test.log``.

``POLYAI_API_GENERATION`` (``outbound``, the default, ``v1`` or ``agents``; ``make demo
API_GENERATION=agents``) picks the PolyAI API generation the connection uses. The DAG is the same.

``POLYAI_DEMO_SCENARIO=campaign`` (``make demo SCENARIO=campaign``) runs the campaign example DAG
on 20 synthetic contacts instead, and prints its summary by outcome.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = ROOT / ".demo"
DAG_ID = "example_polyai_outbound_calls"
TOKEN = "local-test-token"
API_GENERATION = os.environ.get("POLYAI_API_GENERATION") or "outbound"
SCENARIO = os.environ.get("POLYAI_DEMO_SCENARIO") or "calls"
DAG_IDS = {"calls": DAG_ID, "campaign": "example_polyai_campaign"}
# 20 contacts, each called in a window that is open almost all day in the contact's own time zone.
CAMPAIGN_CONF = {"max_contacts": 20, "calling_window": {"start": "00:00", "end": "23:59", "weekdays": "mon-sun"}}


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def start_server() -> tuple[subprocess.Popen, str]:
    port_file = DEMO_DIR / "server.port"
    port_file.unlink(missing_ok=True)
    server = subprocess.Popen(
        [_bin("polyai-local-server"), "--port", "0", "--port-file", str(port_file), "--token", TOKEN],
        stdout=(DEMO_DIR / "server.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    for _ in range(100):
        if port_file.exists() and port_file.read_text().strip():
            return server, f"http://127.0.0.1:{port_file.read_text().strip()}"
        if server.poll() is not None:
            sys.exit(f"The local PolyAI server exited early; see {DEMO_DIR / 'server.log'}")
        time.sleep(0.1)
    server.terminate()
    sys.exit("The local PolyAI server did not start within 10 s.")


def connection_json(base_url: str) -> str:
    """Return the demo connection to the local server, for the API generation chosen."""
    conn: dict[str, object] = {"conn_type": "polyai", "host": base_url, "password": TOKEN}
    if API_GENERATION == "agents":
        conn["extra"] = {"api_generation": "agents", "agent_id": "demo-agent", "environment": "sandbox"}
    elif API_GENERATION != "outbound":
        conn["extra"] = {"api_generation": API_GENERATION}
    return json.dumps(conn)


def airflow_env(base_url: str) -> dict[str, str]:
    airflow_home = DEMO_DIR / "airflow"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "airflow_provider_polyai" / "example_dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        "AIRFLOW_CONN_POLYAI_DEFAULT": connection_json(base_url),
        "POLYAI_REPORT_DIR": str(DEMO_DIR / "reports"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    return env


def run_airflow(env: dict[str, str], log_path: Path) -> None:
    with log_path.open("w") as log:
        subprocess.run([_bin("airflow"), "db", "migrate"], env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
        print("Running the example DAG with `airflow dags test` (about a minute)...", flush=True)
        command = [_bin("airflow"), "dags", "test", DAG_IDS[SCENARIO]]
        if SCENARIO == "campaign":
            command += ["--conf", json.dumps(CAMPAIGN_CONF)]
        result = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    text = log_path.read_text()
    if result.returncode != 0 or "state=success" not in text:
        sys.exit(f"The DAG run did not succeed; see {log_path}")


def print_campaign_report() -> None:
    summaries = sorted((DEMO_DIR / "reports").glob("*/summary.txt"), key=lambda path: path.stat().st_mtime)
    if not summaries:
        sys.exit("The campaign run wrote no summary.")
    print()
    print(summaries[-1].read_text().rstrip())
    print(f"Per-contact report: {(summaries[-1].parent / 'calls.csv').relative_to(ROOT)}")


def print_report() -> None:
    if SCENARIO == "campaign":
        print_campaign_report()
        return
    reports = sorted((DEMO_DIR / "reports").glob("*.csv"), key=lambda path: path.stat().st_mtime)
    if not reports:
        sys.exit("The DAG run wrote no report.")
    with reports[-1].open() as file:
        rows = list(csv.DictReader(file))
    print(f"\nCall outcomes ({reports[-1].relative_to(ROOT)}):")
    print(f"  {'CALL SID':<42} {'NUMBER':<15} {'STATUS':<11} {'OUTCOME':<11} REASON")
    for row in rows:
        outcome = row.get("outcome") or ""
        print(f"  {row['call_sid']:<42} {row['to_number']:<15} {row['status']:<11} {outcome:<11} {row['reason']}")


def print_schedule(base_url: str) -> None:
    """Print the gaps between status polls per call phase, as the server saw them."""
    with urllib.request.urlopen(f"{base_url}/_local/requests", timeout=10) as response:
        entries = json.load(response)
    polls: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for entry in entries:
        if entry["method"] == "GET" and entry.get("call_status"):
            polls[entry["call_sid"]].append((entry["time"], entry["call_status"]))
    gaps: dict[str, list[float]] = defaultdict(list)
    for series in polls.values():
        for (earlier, status), (later, _) in pairwise(series):
            gaps[status].append(later - earlier)
    # dag.test() runs one task at a time, so a call placed early has often ended before its sensor
    # starts. Such a call gets a single poll and adds no gap here.
    print("\nStatus polls received by the local server (gap after a poll that read each status):")
    # Open statuses of every API generation, in the order a call passes through them.
    for status in ("queued", "QUEUED", "ringing", "in-progress", "calling", "CALLING"):
        values = gaps.get(status)
        if values:
            noun = "gap" if len(values) == 1 else "gaps"
            print(f"  {status:<12} {len(values):>3} {noun + ',':<5} {min(values):5.1f}-{max(values):5.1f} s")
    triggers = sum(1 for entry in entries if entry["method"] == "POST")
    print(f"  {len(polls)} calls polled, {triggers} trigger requests, {len(entries)} requests in all")


def main() -> None:
    if API_GENERATION not in ("outbound", "v1", "agents"):
        sys.exit(f"POLYAI_API_GENERATION is {API_GENERATION!r}; use outbound, v1 or agents.")
    if SCENARIO not in DAG_IDS:
        sys.exit(f"POLYAI_DEMO_SCENARIO is {SCENARIO!r}; use {' or '.join(DAG_IDS)}.")
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    DEMO_DIR.mkdir()
    server, base_url = start_server()
    print(f"Local PolyAI server running at {base_url} (API generation {API_GENERATION})")
    try:
        run_airflow(airflow_env(base_url), DEMO_DIR / "dags-test.log")
        print_report()
        print_schedule(base_url)
    finally:
        server.terminate()
        server.wait(timeout=30)
        print("Local PolyAI server stopped.")


if __name__ == "__main__":
    main()
