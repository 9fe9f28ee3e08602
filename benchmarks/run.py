"""Measure the cost of watching many calls: ``python benchmarks/run.py`` (or ``make bench``).

Starts the local PolyAI server in its own process on the second CPU and places the calls, scripted
to stay in progress for the whole run. Then each client mode of ``benchmarks/client.py`` runs in a
fresh process pinned to the first CPU, one after another against the same server. The server's
request log gives the polls each run achieved. Results go to stdout as a table and to
``benchmarks/results.json``; ``benchmarks/RESULTS.md`` records a run by hand.

Traffic goes to 127.0.0.1 only, and every run stops after its fixed window.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOKEN = "bench-token"
NUMBER = "+14155552671"
# queued and ringing last no time, so every call is in progress from its first poll to the end.
LONG_CALL = {"queued_seconds": 0, "ringing_seconds": 0, "in_progress_seconds": 10_000_000}

SCENARIOS = {
    # name: (calls, seconds between polls of one call, measured window in seconds, modes)
    "1k_at_1s": (1_000, 1.0, 20.0, ("floor", "polyai", "http", "batch")),
    "10k_at_15s": (10_000, 15.0, 45.0, ("floor", "polyai", "http", "batch")),
}


def start_server(workdir: Path, cpu: int) -> tuple[subprocess.Popen, int]:
    port_file = workdir / "port"
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "polyai-local-server"), "--port", "0", "--token", TOKEN,
         "--port-file", str(port_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
    )
    deadline = time.monotonic() + 30
    while not port_file.exists() or not port_file.read_text().strip():
        if time.monotonic() > deadline or server.poll() is not None:
            server.kill()
            raise RuntimeError("The local PolyAI server did not start within 30 s.")
        time.sleep(0.1)
    return server, int(port_file.read_text())


async def place_calls(port: int, count: int) -> list[str]:
    import aiohttp

    base_url = f"http://127.0.0.1:{port}"
    headers = {"X-PolyAi-Auth-Token": TOKEN}
    async with aiohttp.ClientSession(base_url=base_url) as session:
        async with session.post("/_local/scenarios", json={NUMBER: LONG_CALL}) as response:
            response.raise_for_status()
        limit = asyncio.Semaphore(32)

        async def place() -> str:
            async with limit, session.post("/outbound/trigger", json={"to_number": NUMBER}, headers=headers) as r:
                r.raise_for_status()
                return (await r.json())["call_sid"]

        return list(await asyncio.gather(*(place() for _ in range(count))))


def count_polls(port: int, start: float, end: float) -> int:
    import requests

    entries = requests.get(f"http://127.0.0.1:{port}/_local/requests", timeout=120).json()
    return sum(
        1
        for entry in entries
        if entry["method"] == "GET" and entry["path"].startswith("/outbound/status/") and start <= entry["time"] < end
    )


def run_client(mode: str, calls: int, interval: float, window: float, port: int, sids_file: Path, cpu: int) -> dict:
    command = [
        sys.executable, str(HERE / "client.py"), "--mode", mode, "--calls", str(calls), "--interval", str(interval),
        "--window", str(window), "--port", str(port), "--token", TOKEN, "--sids-file", str(sids_file),
        "--cpu", str(cpu), "--output", str(sids_file.parent / "client.json"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"client {mode} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads((sids_file.parent / "client.json").read_text())
    result["polls"] = count_polls(port, result["window_start"], result["window_end"])
    seconds = result["window_end"] - result["window_start"]
    result["polls_per_s"] = result["polls"] / seconds
    result["requested_per_s"] = calls / interval
    result["cpu_us_per_poll"] = result["cpu_s"] / max(1, result["polls"]) * 1e6
    result["bytes_per_call"] = result["rss_delta_bytes"] / calls
    return result


def import_cost(repeats: int) -> dict:
    """Return the median extra seconds of importing the sensor module, in fresh interpreters."""
    code = (
        "import sys, time\n"
        "import airflow.sdk\n"
        "from airflow.sdk import BaseSensorOperator\n"
        "t0 = time.perf_counter()\n"
        "import airflow_provider_polyai.sensors.outbound_call\n"
        "t1 = time.perf_counter()\n"
        "print(t1 - t0, 'aiohttp' in sys.modules, 'requests' in sys.modules)\n"
    )
    base = (
        "import time\n"
        "t0 = time.perf_counter()\n"
        "import airflow.sdk\n"
        "from airflow.sdk import BaseSensorOperator\n"
        "print(time.perf_counter() - t0)\n"
    )
    sensor, sdk = [], []
    flags = None
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()
        sensor.append(float(out[0]))
        flags = out[1:]
        sdk_run = subprocess.run([sys.executable, "-c", base], capture_output=True, text=True, check=True)
        sdk.append(float(sdk_run.stdout))
    sensor.sort()
    sdk.sort()
    return {
        "sensor_module_ms": sensor[len(sensor) // 2] * 1000,
        "airflow_sdk_and_base_sensor_ms": sdk[len(sdk) // 2] * 1000,
        "aiohttp_imported": flags[0] == "True",
        "requests_imported": flags[1] == "True",
    }


def machine() -> dict:
    from importlib.metadata import version

    cpu_model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "python": platform.python_version(),
        "airflow": version("apache-airflow"),
        "airflow_providers_http": version("apache-airflow-providers-http"),
        "aiohttp": version("aiohttp"),
        "kernel": platform.release(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), help="default: all")
    parser.add_argument("--mode", action="append", help="client modes to run (default: all of the scenario's)")
    parser.add_argument("--output", default=str(HERE / "results.json"), help="JSON file for the results")
    args = parser.parse_args()
    if (os.cpu_count() or 1) < 2:
        sys.exit("The benchmark pins the server and the client to different CPUs and needs 2 or more.")

    scenarios = args.scenario or list(SCENARIOS)
    results: dict = {"machine": machine(), "runs": []}
    with tempfile.TemporaryDirectory(prefix="polyai-bench-") as tmp:
        workdir = Path(tmp)
        server, port = start_server(workdir, cpu=1)
        try:
            max_calls = max(SCENARIOS[name][0] for name in scenarios)
            sids = asyncio.run(place_calls(port, max_calls))
            sids_file = workdir / "sids.txt"
            sids_file.write_text("\n".join(sids))
            for name in scenarios:
                calls, interval, window, modes = SCENARIOS[name]
                for mode in args.mode or modes:
                    result = run_client(mode, calls, interval, window, port, sids_file, cpu=0)
                    result["scenario"] = name
                    results["runs"].append(result)
                    print(
                        f"{name:<11} {mode:<7} polls/s {result['polls_per_s']:8.1f} of {result['requested_per_s']:7.1f}"
                        f"  CPU/poll {result['cpu_us_per_poll']:7.1f} us  lag p50 {result['lag_p50_ms']:6.2f} ms"
                        f"  p99 {result['lag_p99_ms']:7.2f} ms  RSS/call {result['bytes_per_call'] / 1024:6.2f} KiB"
                        f"  busy-lag p99 {result['busy_lag_p99_ms']:6.2f} ms"
                        f"  full GC max {result['gc_full_pause_max_ms']:.0f} ms"
                        f"  GC runs {result['gc_runs']}  load {result['load_average']:.1f}",
                        flush=True,
                    )
        finally:
            server.terminate()
            server.wait(timeout=30)
    results["import"] = import_cost(repeats=7)
    print(json.dumps(results["import"]))
    Path(args.output).write_text(json.dumps(results, indent=2))
    print(f"Results written to {args.output}")


if __name__ == "__main__":
    main()
