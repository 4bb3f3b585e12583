"""Per-call cost of `ServiceClient.query` beside a bare aiohttp call to the same upstream.

The upstream is the bare Starlette app of `reference_app.py` (one uvicorn process, answering
the query contract instantly). Both clients run in this process with the same concurrency and
the same number of calls, in alternating rounds; the ratio of their median times per call is
what the pipeline costs: request validation, discovery cache, outlier check, balancer, two
circuit breakers, the spec's client metrics, response validation, and tracing with the
OpenTelemetry SDK installed (spans recorded, no exporter).

    .venv/bin/python bench/service_client_overhead.py [--calls 20000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

import aiohttp
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from _harness import API_KEY, run_server
from prsm.client.service import ServiceClient
from prsm.sd import StaticDiscovery

BODY = {"prompt": "What is the capital of France?", "userId": "u1", "priority": "normal"}


async def drive(call: Callable[[], Awaitable[object]], calls: int, concurrency: int) -> float:
    """Seconds per call, `calls` calls from `concurrency` tasks."""
    remaining = calls

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.perf_counter() - started) / calls


async def compare(base: str, calls: int, concurrency: int, rounds: int) -> tuple[float, float]:
    url = base + "/api/v1/query"
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def bare() -> object:
            async with session.post(url, data=json.dumps(BODY), headers=headers) as response:
                response.raise_for_status()
                return json.loads(await response.read())

        async with ServiceClient(StaticDiscovery([base]), api_key=API_KEY) as prsm:

            async def pipeline() -> object:
                return await prsm.query("What is the capital of France?", user_id="u1")

            await drive(bare, 2000, concurrency)  # warm both: connections, caches
            await drive(pipeline, 2000, concurrency)
            bare_times, prsm_times = [], []
            for _ in range(rounds):
                bare_times.append(await drive(bare, calls, concurrency))
                prsm_times.append(await drive(pipeline, calls, concurrency))
    return statistics.median(bare_times), statistics.median(prsm_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-tracing", action="store_true", help="no tracer provider")
    args = parser.parse_args()
    if not args.no_tracing:
        trace.set_tracer_provider(TracerProvider())  # tracing on, spans recorded, no exporter
    argv = [
        sys.executable, "-m", "uvicorn", "reference_app:app",
        "--port", "{port}", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    with run_server(argv, "/ready") as base:
        bare, prsm = asyncio.run(compare(base, args.calls, args.concurrency, args.rounds))
    print(f"{args.calls} calls x {args.rounds} rounds, {args.concurrency} concurrent, median:")
    print(f"bare aiohttp          : {bare * 1e6:7.1f} us/call  {1 / bare:8.0f} calls/s")
    print(f"ServiceClient.query   : {prsm * 1e6:7.1f} us/call  {1 / prsm:8.0f} calls/s")
    print(f"ratio (goal <= 1.15)  : {prsm / bare:.2f}")


if __name__ == "__main__":
    main()
