"""`make chaos`: two minutes of an operator's bad day against the whole stack, then a verdict.

Three `prsm serve` instances (fixed engine) behind `prsm gateway`, a `prsm worker`, Redis and
a callback receiver; 26 clients send queries, OpenAI streams and jobs (with `Idempotency-Key`
and callbacks) while, at fixed times, api1 is SIGKILLed, api2 SIGTERMed (drained) and
restarted, Redis SIGSTOPped for 5 s and the worker SIGKILLed and restarted. Then:

- no query or stream ran twice (counted in the API instances' own logs);
- every accepted job reached `complete` or `failed` and its callback arrived (at least once,
  duplicates told apart by `X-PRSM-Job-ID`); a retried submission got the same job;
- every stream ended with `[DONE]`, cleanly or after an error event, never cut short;
- the drained instance exited 0; no 5xx came without `Retry-After`;
- the gateway's and a surviving instance's memory stayed flat.

It prints a table by phase and exits 1 if any of these failed.

`--sentinel`: the same stack and load on a Redis that fails over — a master, two replicas and
three sentinels (`prsm.embedded_redis.SentinelDeployment`), every part given the Sentinel URL,
job submissions and budget charges confirmed by both replicas (`redis_confirm_replicas`) —
with the master SIGKILLed, then a manual `SENTINEL FAILOVER`. Beside the promises above: six
clients on a budget of their own never get more than it admits, and the table says how long
each phase went without an accepted write.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from aiohttp import web

from prsm.embedded_redis import EmbeddedRedis, SentinelDeployment
from prsm.server.auth import key_id

KEY = "chaos-key-0123456789"
SECRET = "chaos-callback-secret"
AUTH = {"Authorization": f"Bearer {KEY}"}
LOAD_SECONDS = 90.0
PHASES = [  # (starts at, name, the fault that opens it)
    (0.0, "warm", None),
    (15.0, "api1 killed", "kill_api1"),
    (30.0, "api2 drained", "drain_api2"),
    (50.0, "redis frozen", "freeze_redis"),
    (55.0, "redis back", "thaw_redis"),
    (70.0, "worker killed", "kill_worker"),
]
SENTINEL_PHASES = [
    (0.0, "warm", None),
    (15.0, "master killed", "kill_master"),
    (40.0, "failover", "failover_master"),
]
QUERY_CLIENTS, STREAM_CLIENTS, JOB_CLIENTS = 12, 6, 8
BUDGET_KEY = "chaos-budget-key-0123456789"
BUDGET_CLIENTS, BUDGET_REQUESTS = 6, 500
"""Sentinel run: clients on a key with a budget of its own, sized to run out after the
failover (charges the switch discarded would let more through)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Process:
    """One `python -m prsm …` process, restartable with the same arguments."""

    name: str
    args: list[str]
    env: dict[str, str]
    logs: Path
    runs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self) -> None:
        log = (self.logs / f"{self.name}-{len(self.runs)}.log").open("wb")
        command = [sys.executable, "-m", "prsm", *self.args]
        self.runs.append(subprocess.Popen(command, env=self.env, stdout=log, stderr=log))

    @property
    def current(self) -> subprocess.Popen[bytes]:
        return self.runs[-1]

    def log_lines(self) -> list[dict[str, Any]]:
        entries = []
        for path in sorted(self.logs.glob(f"{self.name}-*.log")):
            for line in path.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    entries.append(json.loads(line))
        return entries

    def stop(self) -> None:
        for run in self.runs:
            if run.poll() is None:
                run.send_signal(signal.SIGCONT)
                run.terminate()
                try:
                    run.wait(20)
                except subprocess.TimeoutExpired:
                    run.kill()


@dataclass
class Outcome:
    """What one client request came to."""

    phase: str
    kind: str  # query, stream, job, budget (a query on the budgeted key)
    status: int  # 0: the connection failed
    retry_after: bool = False
    seconds: float = 0.0
    stream_end: str = ""  # done, error, cut
    at: float = field(default_factory=time.monotonic)  # when it came

    @property
    def wrote(self) -> bool:
        """Whether Redis took a write for it: a job accepted, a budgeted query charged."""
        return (self.kind, self.status) in (("job", 202), ("budget", 200))


@dataclass
class Run:
    """Everything the clients and the receiver saw."""

    started: float = 0.0
    outcomes: list[Outcome] = field(default_factory=list)
    jobs: dict[str, str] = field(default_factory=dict)  # idempotency key -> job id
    resubmitted_elsewhere: list[str] = field(default_factory=list)
    callbacks: Counter[str] = field(default_factory=Counter)
    unsettled: dict[str, str] = field(default_factory=dict)  # job id -> its last status
    phases: list[tuple[float, str, str | None]] = field(default_factory=lambda: PHASES)

    def phase(self) -> str:
        elapsed = time.monotonic() - self.started
        return [name for start, name, _ in self.phases if elapsed >= start][-1]


def env_for(**settings: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PRSM_")}
    return clean | {"PRSM_LOG_FORMAT": "json"} | settings


async def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    async with httpx.AsyncClient() as http:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{url} exited with {process.returncode} before it was ready")
            with contextlib.suppress(httpx.TransportError):
                if (await http.get(url, timeout=1)).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} was not ready in {timeout} s")


async def wait_worker(worker: Process, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    log = worker.logs / f"{worker.name}-{len(worker.runs) - 1}.log"
    while "worker started" not in log.read_text(errors="replace"):
        if worker.current.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not start:\n{log.read_text()}")
        await asyncio.sleep(0.05)


# -- clients -----------------------------------------------------------------------------------


async def query_client(
    run: Run, http: httpx.AsyncClient, n: int, until: float, key: str = KEY, kind: str = "query"
) -> None:
    """Queries one after another with `key` (`kind` "budget": the budgeted key's)."""
    count = 0
    while time.monotonic() < until:
        count += 1
        cid = f"{kind[0]}-{n}-{count}"
        phase, started = run.phase(), time.monotonic()
        try:
            response = await http.post(
                "/api/v1/query",
                json={"prompt": f"question {count}", "userId": f"user-{n}"},
                headers={"Authorization": f"Bearer {key}", "X-Correlation-ID": cid},
            )
        except httpx.TransportError:
            run.outcomes.append(Outcome(phase, kind, 0))
            continue
        run.outcomes.append(
            Outcome(phase, kind, response.status_code, "retry-after" in response.headers,
                    time.monotonic() - started)
        )  # fmt: skip
        if response.status_code == 429:  # a spent budget: wait as a polite client does
            await asyncio.sleep(1.0)


async def stream_client(run: Run, http: httpx.AsyncClient, n: int, until: float) -> None:
    count = 0
    ask = {"model": "fixed", "messages": [{"role": "user", "content": "Count."}], "stream": True}
    while time.monotonic() < until:
        count += 1
        phase, started = run.phase(), time.monotonic()
        headers = AUTH | {"X-Correlation-ID": f"s-{n}-{count}"}
        try:
            async with http.stream("POST", "/v1/chat/completions", json=ask, headers=headers) as r:
                body = (await r.aread()).decode()
                status, retry_after = r.status_code, "retry-after" in r.headers
        except httpx.TransportError:
            run.outcomes.append(Outcome(phase, "stream", 200, stream_end="cut"))
            continue
        end = ""
        if status == 200:
            events = body.strip().split("\n\n")
            if events[-1] != "data: [DONE]":
                end = "cut"
            else:
                end = "error" if any('"error"' in e for e in events) else "done"
        run.outcomes.append(
            Outcome(phase, "stream", status, retry_after, time.monotonic() - started, end)
        )


async def job_client(
    run: Run, http: httpx.AsyncClient, n: int, until: float, callback: str
) -> None:
    count = 0
    while time.monotonic() < until:
        count += 1
        key = f"job-{n}-{count}"
        if count % 4 == 0:
            data: dict[str, Any] = {"batchId": key, "queries": [
                {"id": f"{key}-{i}", "prompt": f"batch question {i}", "userId": f"user-{n}"}
                for i in range(3)
            ]}  # fmt: skip
            body = {"type": "batch-query", "data": data, "callbackUrl": callback}
        else:
            data = {"prompt": f"job question {count}", "userId": f"user-{n}"}
            body = {"type": "priority-query", "data": data, "callbackUrl": callback}
        await submit(run, http, key, body)
        await asyncio.sleep(2.0)


async def submit(run: Run, http: httpx.AsyncClient, key: str, body: dict[str, Any]) -> None:
    """Submit until accepted, with the same key every time: one job, whatever failed."""
    for _ in range(60):
        phase, started = run.phase(), time.monotonic()
        try:
            response = await http.post(
                "/api/v1/jobs", json=body, headers=AUTH | {"Idempotency-Key": key}
            )
        except httpx.TransportError:
            run.outcomes.append(Outcome(phase, "job", 0))
            await asyncio.sleep(0.5)
            continue
        retry_after = "retry-after" in response.headers
        run.outcomes.append(
            Outcome(phase, "job", response.status_code, retry_after, time.monotonic() - started)
        )
        if response.status_code == 202:
            job_id = response.json()["jobId"]
            if run.jobs.setdefault(key, job_id) != job_id:
                run.resubmitted_elsewhere.append(key)
            return
        await asyncio.sleep(float(response.headers.get("retry-after", "0.5")))
    raise RuntimeError(f"job {key} was never accepted")


# -- the run -----------------------------------------------------------------------------------


@dataclass
class Stack:
    redis: EmbeddedRedis | SentinelDeployment
    apis: list[Process]
    gateway: Process
    worker: Process
    gateway_url: str
    api_urls: list[str]
    events: list[str] = field(default_factory=list)
    drained_exit: int | None = None
    rss: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))

    async def kill_api1(self) -> None:
        self.apis[0].current.kill()
        self.events.append("api1 SIGKILL")

    async def drain_api2(self) -> None:
        api2 = self.apis[1]
        api2.current.send_signal(signal.SIGTERM)
        self.drained_exit = await asyncio.to_thread(api2.current.wait, 60)
        self.events.append(f"api2 SIGTERM → exit {self.drained_exit}")
        api2.start()
        await wait_ready(self.api_urls[1] + "/ready", api2.current)
        self.events.append("api2 restarted")

    async def kill_master(self) -> None:
        assert isinstance(self.redis, SentinelDeployment)
        master = self.redis.master_port()
        self.redis.kill(master)
        self.events.append("redis master SIGKILL")
        # Back, empty, as its pod is restarted — once another was promoted (with no persistence
        # an empty master back sooner would be taken back, and its replicas would copy it).
        deadline = time.monotonic() + 30
        while await asyncio.to_thread(self.redis.master_port) == master:
            if time.monotonic() > deadline:
                raise RuntimeError("the sentinels promoted no replica within 30 s")
            await asyncio.sleep(0.2)
        await asyncio.sleep(2)
        self.redis.restart(master)
        self.events.append("old master restarted")

    async def failover_master(self) -> None:
        assert isinstance(self.redis, SentinelDeployment)
        await asyncio.to_thread(self.redis.failover)
        self.events.append("SENTINEL FAILOVER")

    def _redis_pid(self) -> int:
        assert isinstance(self.redis, EmbeddedRedis)
        assert self.redis._process is not None
        return self.redis._process.pid

    async def freeze_redis(self) -> None:
        os.kill(self._redis_pid(), signal.SIGSTOP)
        self.events.append("redis SIGSTOP")

    async def thaw_redis(self) -> None:
        os.kill(self._redis_pid(), signal.SIGCONT)
        self.events.append("redis SIGCONT")

    async def kill_worker(self) -> None:
        self.worker.current.kill()
        self.events.append("worker SIGKILL")
        await asyncio.sleep(2)
        self.worker.start()
        await wait_worker(self.worker)
        self.events.append("worker restarted")

    def sample_memory(self) -> None:
        for name, process in (("gateway", self.gateway), ("api3", self.apis[2])):
            self.rss[name].append(psutil.Process(process.current.pid).memory_info().rss)


async def faults(stack: Stack, run: Run) -> None:
    for start, _, fault in run.phases:
        await asyncio.sleep(max(0.0, run.started + start - time.monotonic()))
        if fault == "kill_api1":  # warmed up: memory from here on should stay flat
            stack.sample_memory()
        if fault is not None:
            await getattr(stack, fault)()
    await asyncio.sleep(max(0.0, run.started + LOAD_SECONDS - 1 - time.monotonic()))
    stack.sample_memory()


async def receiver(run: Run) -> tuple[web.AppRunner, str]:
    async def hook(request: web.Request) -> web.Response:
        await request.read()
        run.callbacks[request.headers.get("X-PRSM-Job-ID", "?")] += 1
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}/hook"


def start_redis(root: Path, sentinel: bool) -> tuple[EmbeddedRedis | SentinelDeployment, str]:
    """One Redis, or a Sentinel deployment of three servers and three sentinels; its URL."""
    if not sentinel:
        redis = EmbeddedRedis(root / "redis")
        return redis, redis.start()
    deployment = SentinelDeployment(root / "sentinel").start()
    return deployment, deployment.url


def sentinel_settings() -> dict[str, str]:
    """What the Sentinel run adds to the API's settings: both replicas confirm job
    submissions and budget charges; the budgeted key's own budget, in one window for the run."""
    budget = {key_id(BUDGET_KEY): {"requests_per_minute": BUDGET_REQUESTS}}
    return {
        "PRSM_API_KEYS": f"{KEY},{BUDGET_KEY}",
        "PRSM_REDIS_CONFIRM_REPLICAS": "2",
        "PRSM_BUDGETS__CALLERS": json.dumps(budget),
        "PRSM_BUDGETS__MINUTE_SECONDS": str(10**9),  # one window for the run: none rolls over
    }


async def start_stack(root: Path, sentinel: bool = False) -> Stack:
    redis, redis_url = start_redis(root, sentinel)
    ports = [free_port() for _ in range(3)]
    api_env = env_for(
        PRSM_API_KEYS=KEY,
        PRSM_API_KEY=KEY,  # the worker's: it may show its jobs' tokens
        PRSM_JOBS__CALLBACK_ALLOW="127.0.0.0/8",  # the receiver runs on this machine
        PRSM_REDIS_URL=redis_url,
        PRSM_ENGINE__KIND="fixed",
        PRSM_ENGINE__FIXED_ANSWER="one two three four five six",
        PRSM_ENGINE__FIXED_DELAY_SECONDS="0.6",
        PRSM_ENGINE__CONCURRENCY="16",
        PRSM_SERVER__DRAIN_SECONDS="2",
        PRSM_STATE_DIR=str(root / "state"),
    ) | (sentinel_settings() if sentinel else {})
    apis = [
        Process(f"api{i + 1}", ["serve", "--port", str(port)], api_env, root)
        for i, port in enumerate(ports)
    ]
    api_urls = [f"http://127.0.0.1:{port}" for port in ports]
    for api in apis:
        api.start()
    for api, url in zip(apis, api_urls, strict=True):
        await wait_ready(url + "/ready", api.current)
    gateway_port = free_port()
    config: dict[str, Any] = {
        "pools": {"api": {"discovery": {"kind": "static", "urls": api_urls}}},
        "routes": [
            {"prefix": "/api/v1", "pool": "api", "retries": {"attempts": 3}},
            {"prefix": "/v1", "pool": "api", "retries": {"attempts": 3}},
        ],
    }
    if sentinel:  # the gateway's limits counted in the Redis that fails over too (never hit)
        limit = {"limit": "100000/minute", "key": "api_key", "budget": "everyone"}
        for route in config["routes"]:
            route["rate_limit"] = limit
        config |= {"rate_limit_storage": "redis", "redis_url": redis_url}
    (root / "gateway.yaml").write_text(json.dumps(config))
    gateway = Process(
        "gateway",
        ["gateway", "--config", str(root / "gateway.yaml"), "--port", str(gateway_port)],
        env_for(),
        root,
    )
    gateway.start()
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    await wait_ready(gateway_url + "/ready", gateway.current)
    worker_env = env_for(
        PRSM_REDIS_URL=redis_url,
        PRSM_BASE_URL=gateway_url,
        PRSM_API_KEY=KEY,
        PRSM_JOBS__CALLBACK_SECRET=SECRET,
        PRSM_JOBS__CALLBACK_ALLOW="127.0.0.0/8",
        PRSM_JOBS__HEARTBEAT_SECONDS="2",
        PRSM_JOBS__SWEEP_SECONDS="1",
        PRSM_JOBS__RETRY_DELAY_SECONDS="0.2",
        PRSM_JOBS__METRICS_PORT="0",
    )
    worker = Process("worker", ["worker"], worker_env, root)
    worker.start()
    await wait_worker(worker)
    return Stack(redis, apis, gateway, worker, gateway_url, api_urls)


async def settle_jobs(run: Run, stack: Stack, timeout: float = 90) -> dict[str, str]:
    """Each accepted job's final status, once all have one (or the timeout passes); the
    others' last status is left in `run.unsettled`."""
    final: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=stack.gateway_url, headers=AUTH, timeout=10) as http:
        while time.monotonic() < deadline:
            for job_id in set(run.jobs.values()) - set(final):
                with contextlib.suppress(httpx.TransportError, ValueError):
                    status = (await http.get(f"/api/v1/jobs/{job_id}")).json().get("status")
                    if status in ("complete", "failed"):
                        final[job_id] = status
                    else:
                        run.unsettled[job_id] = str(status)
            if len(final) == len(set(run.jobs.values())) and all(run.callbacks[j] for j in final):
                break
            await asyncio.sleep(0.5)
    return final


def table(run: Run) -> list[str]:
    rows = ["phase           | kind   | sent |  2xx |  4xx | 5xx (no Retry-After) | failed | "
            "stream done/error/cut"]  # fmt: skip
    for _, name, _ in run.phases:
        for kind in ("query", "stream", "job", "budget"):
            seen = [o for o in run.outcomes if o.phase == name and o.kind == kind]
            if not seen:
                continue
            ok = sum(200 <= o.status < 300 for o in seen)
            client = sum(400 <= o.status < 500 for o in seen)
            server = [o for o in seen if o.status >= 500]
            bare = sum(not o.retry_after for o in server)
            failed = sum(o.status == 0 for o in seen)
            ends = Counter(o.stream_end for o in seen)
            streams = f"{ends['done']}/{ends['error']}/{ends['cut']}" if kind == "stream" else ""
            rows.append(
                f"{name:<15} | {kind:<6} | {len(seen):>4} | {ok:>4} | {client:>4} | "
                f"{len(server):>4} ({bare}){'':>14} | {failed:>6} | {streams}"
            )
    return rows


def verdict(run: Run, stack: Stack, final: dict[str, str]) -> list[str]:
    """Every broken promise, in words; none means the run passed."""
    answered = answers_at_the_api(stack)
    broken = [*job_promises(run, final), *stack_promises(stack)]
    twice = sorted(cid for cid, n in answered.items() if n > 1)
    if twice:
        broken.insert(0, f"{len(twice)} requests ran twice at the API: {twice[:5]}")
    cut = sum(o.stream_end == "cut" for o in run.outcomes)
    if cut:
        broken.append(f"{cut} streams were cut short without an error event")
    bare = [o for o in run.outcomes if o.status >= 500 and not o.retry_after]
    if bare:
        broken.append(
            f"{len(bare)} 5xx answers without Retry-After: {Counter(o.status for o in bare)}"
        )
    if not run.jobs or not answered:
        broken.append("the run sent too little to judge")
    return broken


def answers_at_the_api(stack: Stack) -> Counter[str]:
    """How many times each of the run's queries reached an engine, from the APIs' logs (a
    query refused before it got an engine slot — 503 while draining or saturated, a 4xx —
    logs `admitted: false` and ran nowhere; a line without the field counts as a run)."""
    answered: Counter[str] = Counter()
    for api in stack.apis:
        for entry in api.log_lines():
            cid = str(entry.get("correlationId", ""))
            message = str(entry.get("message", ""))
            ran = entry.get("admitted", True) is not False
            if message.startswith("query ") and cid[:2] in ("q-", "s-") and ran:
                answered[cid] += 1
    return answered


def job_promises(run: Run, final: dict[str, str]) -> list[str]:
    """Jobs: every one finished, called back, and a resubmission found the first."""
    broken = []
    lost = sorted(set(run.jobs.values()) - set(final))
    if lost:
        statuses = Counter(run.unsettled.get(job_id, "?") for job_id in lost)
        broken.append(f"{len(lost)} jobs never finished (last seen {dict(statuses)}): {lost[:3]}")
    uncalled = sorted(j for j in final if not run.callbacks[j])
    if uncalled:
        broken.append(f"{len(uncalled)} finished jobs never called back: {uncalled[:5]}")
    if run.resubmitted_elsewhere:
        broken.append(f"retried submissions got another job: {run.resubmitted_elsewhere[:5]}")
    return broken


def stack_promises(stack: Stack) -> list[str]:
    """The processes: the drained one (if one was) exited cleanly, none grew in memory."""
    broken = []
    if stack.drained_exit not in (None, 0):  # None: no drain in this run
        broken.append(f"the drained instance exited {stack.drained_exit}, not 0")
    for name, samples in stack.rss.items():
        first, last = samples[0], samples[-1]
        if last > first * 1.25 + 16 * 2**20:
            broken.append(f"{name} memory grew from {first >> 20} to {last >> 20} MiB")
    return broken


LOGS = Path("build/chaos")
"""Every process's log of the last run (JSON lines), kept for reading after a failure."""


async def main(root: Path, sentinel: bool) -> int:
    run = Run(phases=SENTINEL_PHASES if sentinel else PHASES)
    runner, callback = await receiver(run)
    stack = await start_stack(root, sentinel)
    try:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=60, limits=limits) as http:
            run.started = time.monotonic()
            until = run.started + LOAD_SECONDS
            clients: list[Awaitable[None]] = [
                *(query_client(run, http, n, until) for n in range(QUERY_CLIENTS)),
                *(stream_client(run, http, n, until) for n in range(STREAM_CLIENTS)),
                *(job_client(run, http, n, until, callback) for n in range(JOB_CLIENTS)),
                *(
                    query_client(run, http, n, until, BUDGET_KEY, "budget")
                    for n in range(BUDGET_CLIENTS if sentinel else 0)
                ),
            ]
            await asyncio.gather(faults(stack, run), *clients)
        final = await settle_jobs(run, stack)
        broken = verdict(run, stack, final) + (budget_promise(run) if sentinel else [])
    finally:
        for process in (stack.gateway, stack.worker, *stack.apis):
            process.stop()
        stack.redis.stop()
        await runner.cleanup()
    report(run, stack, final, broken)
    return 1 if broken else 0


def budget_admitted(run: Run) -> int:
    """How many queries the budgeted key got answered."""
    return sum(o.kind == "budget" and o.status == 200 for o in run.outcomes)


def budget_promise(run: Run) -> list[str]:
    """The budgeted key got no more than its budget, across every failover."""
    if (admitted := budget_admitted(run)) > BUDGET_REQUESTS:
        return [f"the budget of {BUDGET_REQUESTS} requests admitted {admitted}"]
    return []


def write_gaps(run: Run) -> list[str]:
    """Per phase, the longest time no write (a job accepted, a budgeted query admitted) got
    through."""
    lines = []
    bounds = [start for start, _, _ in run.phases] + [LOAD_SECONDS]
    for (start, name, _), end in zip(run.phases, bounds[1:], strict=True):
        writes = (o.at for o in run.outcomes if o.wrote and start <= o.at - run.started < end)
        times = [run.started + start, *sorted(writes)]
        times.append(run.started + end)
        lines.append(f"{name}: {max(b - a for a, b in itertools.pairwise(times)):.1f} s")
    return lines


def chaos(sentinel: bool = False) -> int:
    """One run in a fresh folder; the processes' logs are copied to `LOGS` whatever happens."""
    shutil.rmtree(LOGS, ignore_errors=True)
    LOGS.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="prsm-chaos-") as tmp:
        try:
            return asyncio.run(main(Path(tmp), sentinel))
        finally:
            for log in Path(tmp).glob("*.log"):
                shutil.copy(log, LOGS)


def report(run: Run, stack: Stack, final: dict[str, str], broken: list[str]) -> None:
    print("\n".join(table(run)))
    print(f"\nfaults: {'; '.join(stack.events)}")
    duplicates = sum(n - 1 for j, n in run.callbacks.items() if j in final and n > 1)
    print(
        f"jobs: {len(run.jobs)} accepted, {Counter(final.values())}, "
        f"callbacks {sum(run.callbacks.values())} ({duplicates} duplicates, told apart by "
        "X-PRSM-Job-ID)"
    )
    for name, samples in stack.rss.items():
        print(f"{name} RSS: " + " → ".join(f"{s >> 20} MiB" for s in samples))
    print(f"longest time without an accepted write: {'; '.join(write_gaps(run))}")
    if isinstance(stack.redis, SentinelDeployment):
        print(f"budget: {budget_admitted(run)} queries admitted of {BUDGET_REQUESTS}")
    print(f"(the processes' logs: {LOGS}/)")
    print("\nPASSED: nothing ran twice, nothing was lost" if not broken else "\nFAILED:")
    for line in broken:
        print(f"  - {line}")


if __name__ == "__main__":
    sys.exit(chaos(sentinel="--sentinel" in sys.argv[1:]))
