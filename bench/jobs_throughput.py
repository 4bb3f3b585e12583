"""End-to-end jobs/s of PRSM beside bare SAQ, on the same Redis, in one run.

PRSM: `POST /api/v1/jobs` (priority-query) over HTTP -> `prsm worker` -> `POST /api/v1/query`
on `prsm serve` with the instant `fixed` engine -> result stored. Bare SAQ: the same number of
jobs enqueued with SAQ itself, run by a SAQ worker whose job does nothing. Both workers run
concurrency 5 in their own process; both sides enqueue with 32 requests in flight; the clock
runs from the first enqueue until no job is left incomplete. Goal: PRSM >= 0.8x bare SAQ.

    .venv/bin/python bench/jobs_throughput.py [--jobs 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from saq import Queue

from _harness import API_KEY, prsm_serve
from prsm.embedded_redis import EmbeddedRedis
from prsm.jobs.queues import open_queues
from prsm.redis_client import connect_redis

IN_FLIGHT = 32
BODY = {
    "type": "priority-query",
    "data": {"prompt": "What is the capital of France?", "userId": "b"},
}


async def until_done(queue: Queue, started: float) -> float:
    while await queue.count("incomplete"):  # noqa: ASYNC110 - polling Redis, not an event
        await asyncio.sleep(0.01)
    return time.perf_counter() - started


async def bounded(n: int, submit: object) -> None:
    sem = asyncio.Semaphore(IN_FLIGHT)

    async def one(i: int) -> None:
        async with sem:
            await submit(i)  # type: ignore[operator]

    await asyncio.gather(*(one(i) for i in range(n)))


async def run_bare(url: str, n: int) -> float:
    queue = Queue.from_url(url, name="bench-bare")
    started = time.perf_counter()
    await bounded(n, lambda i: queue.enqueue("noop", i=i))
    seconds = await until_done(queue, started)
    await queue.disconnect()
    return seconds


async def run_prsm(url: str, api: str, n: int) -> float:
    redis = connect_redis(url)
    queue = open_queues(redis)["priority-query"]
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with aiohttp.ClientSession(headers=headers) as http:

        async def submit(i: int) -> None:
            async with http.post(f"{api}/api/v1/jobs", json=BODY) as response:
                assert response.status == 202, await response.text()

        started = time.perf_counter()
        await bounded(n, submit)
        seconds = await until_done(queue, started)
    await redis.aclose()
    return seconds


def spawn(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PRSM_")}
    return subprocess.Popen(
        argv, env=clean | env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis") as url:
        bare_worker = spawn([sys.executable, "saq_noop_worker.py", url, "bench-bare"], {})
        api_env = {
            "PRSM_REDIS_URL": url,
            "PRSM_ENGINE__KIND": "fixed",
            "PRSM_ENGINE__MAX_QUEUE": "1000",
            "PRSM_ENGINE__CONCURRENCY": "16",
        }
        with prsm_serve(api_env) as api:
            worker = spawn(
                [sys.executable, "-m", "prsm", "worker"],
                {
                    "PRSM_REDIS_URL": url,
                    "PRSM_BASE_URL": api,
                    "PRSM_API_KEY": API_KEY,
                    "PRSM_JOBS__CALLBACK_SECRET": "bench",
                    "PRSM_JOBS__METRICS_PORT": "0",
                    "PRSM_LOG_LEVEL": "warning",
                },
            )
            try:
                time.sleep(2)  # both workers connected
                asyncio.run(run_bare(url, 100))  # warm-up
                asyncio.run(run_prsm(url, api, 100))
                bare = args.jobs / asyncio.run(run_bare(url, args.jobs))
                prsm = args.jobs / asyncio.run(run_prsm(url, api, args.jobs))
            finally:
                worker.terminate()
                bare_worker.terminate()
                worker.wait()
                bare_worker.wait()
    print(f"{args.jobs} jobs, {IN_FLIGHT} enqueues in flight, worker concurrency 5, one Redis")
    print(f"bare SAQ, no-op job             : {bare:8.0f} jobs/s")
    print(f"PRSM HTTP submit -> worker -> API: {prsm:8.0f} jobs/s")
    print(f"ratio PRSM / bare SAQ            : {prsm / bare:8.3f}   (goal >= 0.8)")


if __name__ == "__main__":
    main()
