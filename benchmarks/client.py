"""One measured polling run on one event loop, pinned to one CPU; prints its measurements as JSON.

Started by ``benchmarks/run.py``, which owns the local server and counts the polls the server
received. Modes, all polling ``GET /outbound/status/{call_sid}`` on the same server:

- ``polyai``: one :class:`OutboundCallStatusTrigger` per call, as a triggerer runs them.
- ``batch``: one :class:`OutboundCallsBatchTrigger` watching every call.
- ``http``: one Airflow HTTP provider ``HttpSensorTrigger`` per call, on an unknown SID. The server
  returns 404 for it, and 404 is the status on which that trigger keeps polling.
- ``floor``: a bare loop per call on one shared, pooled aiohttp session: the least a client can do.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import statistics
import time
from pathlib import Path

TICK_SECONDS = 0.02


def rss_bytes() -> int:
    with open("/proc/self/statm") as file:
        return int(file.read().split()[1]) * resource.getpagesize()


async def consume(trigger) -> None:
    async for _event in trigger.run():
        return


async def floor_poll(session, path: str, headers: dict[str, str], interval: float) -> None:
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        async with session.get(path, headers=headers) as response:
            body = await response.read()
        json.loads(body)
        await asyncio.sleep(interval - (loop.time() - started))


async def ticker(lags: list[float], busy_lags: list[float]) -> None:
    # Oversleep of a short sleep is how long the loop was busy with other work when the timer fired,
    # or how long the process waited for the CPU. The CPU time this process used during the tick
    # bounds the first part, so ``busy_lags`` leaves out waits caused by other processes.
    while True:
        started = time.perf_counter()
        cpu_started = time.process_time()
        await asyncio.sleep(TICK_SECONDS)
        lag = time.perf_counter() - started - TICK_SECONDS
        lags.append(lag)
        busy_lags.append(max(0.0, min(lag, time.process_time() - cpu_started)))


class GCPauses:
    """Durations of the garbage collector's runs, from ``gc.callbacks``."""

    def __init__(self) -> None:
        self.started = 0.0
        self.pauses: list[tuple[int, float]] = []
        gc.callbacks.append(self)

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.pauses.append((info["generation"], time.perf_counter() - self.started))


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def run(args: argparse.Namespace) -> dict:
    sids = Path(args.sids_file).read_text().split()[: args.calls]
    base_url = f"http://127.0.0.1:{args.port}"
    token = args.token
    loop = asyncio.get_running_loop()
    starters = []

    if args.mode == "polyai":
        from airflow_provider_polyai.triggers.outbound_call import OutboundCallStatusTrigger

        for sid in sids:
            trigger = OutboundCallStatusTrigger(
                call_sid=sid, poke_interval=args.interval, in_progress_poke_interval=args.interval
            )
            starters.append(lambda trigger=trigger: consume(trigger))
    elif args.mode == "batch":
        from airflow_provider_polyai.triggers.outbound_calls_batch import OutboundCallsBatchTrigger

        trigger = OutboundCallsBatchTrigger(
            call_sids=sids, poke_interval=args.interval, in_progress_poke_interval=args.interval
        )
        starters.append(lambda: consume(trigger))
    elif args.mode == "http":
        import uuid

        from airflow.providers.http.triggers.http import HttpSensorTrigger

        for _sid in sids:
            trigger = HttpSensorTrigger(
                endpoint=f"/outbound/status/OUT-{uuid.uuid4()}",
                http_conn_id="bench_http",
                method="GET",
                headers={"X-PolyAi-Auth-Token": token, "Accept": "application/json"},
                poke_interval=args.interval,
            )
            starters.append(lambda trigger=trigger: consume(trigger))
    else:
        import aiohttp

        session = aiohttp.ClientSession(base_url=base_url, connector=aiohttp.TCPConnector(limit=64))
        headers = {"X-PolyAi-Auth-Token": token, "Accept": "application/json"}
        for sid in sids:
            path = f"/outbound/status/{sid}"
            starters.append(lambda path=path: floor_poll(session, path, headers, args.interval))

    gc.collect()
    rss_before = rss_bytes()
    lags: list[float] = []
    busy_lags: list[float] = []
    tick_task = asyncio.ensure_future(ticker(lags, busy_lags))
    gc_pauses = GCPauses()
    tasks: list[asyncio.Task] = []

    # Starts are spread over one interval, as a triggerer picks up deferred tasks over time.
    start = loop.time()
    spread = args.interval / len(starters) if args.mode != "batch" else 0.0
    for index, starter in enumerate(starters):
        loop.call_at(start + index * spread, lambda starter=starter: tasks.append(asyncio.ensure_future(starter())))
    await asyncio.sleep(args.interval + args.warmup)

    rss_steady = rss_bytes()
    heap_objects = len(gc.get_objects())
    lags.clear()
    busy_lags.clear()
    gc_pauses.pauses.clear()
    load_before = os.getloadavg()[0]
    gc_before = [stat["collections"] for stat in gc.get_stats()]
    cpu_before = time.process_time()
    wall_before = time.time()
    await asyncio.sleep(args.window)
    cpu = time.process_time() - cpu_before
    wall_after = time.time()
    gc_runs = [stat["collections"] - before for stat, before in zip(gc.get_stats(), gc_before, strict=True)]
    window_lags = list(lags)
    window_busy_lags = list(busy_lags)
    window_gc = list(gc_pauses.pauses)
    load_after = os.getloadavg()[0]

    tick_task.cancel()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, tick_task, return_exceptions=True)
    if args.mode == "floor":
        await session.close()
    failed = [task for task in tasks if task.done() and not task.cancelled() and task.exception()]

    return {
        "mode": args.mode,
        "calls": len(sids),
        "interval_s": args.interval,
        "window_start": wall_before,
        "window_end": wall_after,
        "cpu_s": cpu,
        "rss_delta_bytes": rss_steady - rss_before,
        "lag_p50_ms": percentile(window_lags, 0.50) * 1000,
        "lag_p99_ms": percentile(window_lags, 0.99) * 1000,
        "lag_max_ms": max(window_lags) * 1000,
        "lag_mean_ms": statistics.fmean(window_lags) * 1000,
        "gc_runs": gc_runs,
        "busy_lag_p50_ms": percentile(window_busy_lags, 0.50) * 1000,
        "busy_lag_p99_ms": percentile(window_busy_lags, 0.99) * 1000,
        "gc_full_pause_max_ms": max((d for g, d in window_gc if g == 2), default=0.0) * 1000,
        "gc_total_ms": sum(d for _, d in window_gc) * 1000,
        "load_average": (load_before + load_after) / 2,
        "tasks_failed": len(failed),
        "heap_objects": heap_objects,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("polyai", "batch", "http", "floor"), required=True)
    parser.add_argument("--calls", type=int, required=True, help="calls watched")
    parser.add_argument("--interval", type=float, required=True, help="seconds between polls of one call")
    parser.add_argument("--window", type=float, required=True, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds after every call started")
    parser.add_argument("--port", type=int, required=True, help="port of the local PolyAI server")
    parser.add_argument("--token", required=True, help="connector token of the local server")
    parser.add_argument("--sids-file", required=True, help="file with one call SID per line")
    parser.add_argument("--cpu", type=int, default=0, help="CPU to pin this process to")
    parser.add_argument("--output", required=True, help="JSON file for the measurements")
    args = parser.parse_args()

    os.sched_setaffinity(0, {args.cpu})
    base_url = f"http://127.0.0.1:{args.port}"
    os.environ["AIRFLOW_CONN_POLYAI_DEFAULT"] = json.dumps(
        {"conn_type": "polyai", "host": base_url, "password": args.token}
    )
    os.environ["AIRFLOW_CONN_BENCH_HTTP"] = json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": args.port})

    # The triggerer's own imports, so the garbage collector walks a heap of the size it has there.
    import airflow.jobs.triggerer_job_runner  # noqa: F401

    result = asyncio.run(run(args))
    # Written to a file: Airflow's logging may write to stdout.
    Path(args.output).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
