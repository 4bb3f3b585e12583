"""Helpers for tests that run real processes and real HTTP servers on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import trustme
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as OtlpSpan

from prsm.jobs.callbacks import LOOPBACK

API_KEY = "test-key-0123456789"
NO_DRAIN_GRACE = "0"
LOOPBACK_CALLBACKS = ",".join(LOOPBACK)
CALLBACK_SECRET = "callback-secret-for-tests"
"""The tests' workers sign callbacks with it."""
"""Servers the tests start take no new work once told to stop: the grace after SIGTERM is for
a load balancer still sending traffic, which no test has (the drain tests set their own)."""


async def until(check: Callable[[], bool]) -> None:
    """Wait, on the event loop, until `check()` holds (polled every 10 ms; at most 30 s)."""
    async with asyncio.timeout(30):
        while not check():  # noqa: ASYNC110 (a condition on plain attributes: nothing to await)
            await asyncio.sleep(0.01)


def wait_for(check: Callable[[], object], timeout: float) -> float:
    """Seconds until `check()` is true (polled every 20 ms); fails after `timeout`."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, "condition not met in time"
        time.sleep(0.02)
    return time.monotonic() - started


def metric(base_url: str, name: str, labels: str = "") -> float:
    """The sum of every series of metric `name` (whose labels contain `labels`) at `/metrics`."""
    text = httpx.get(base_url + "/metrics").text
    pattern = rf"^{re.escape(name)}(\{{[^}}]*{re.escape(labels)}[^}}]*\}})? (\S+)$"
    return sum(float(m.group(2)) for m in re.finditer(pattern, text, re.M))


def leave_after(base_url: str, path: str, body: dict[str, Any], marker: bytes) -> None:
    """POST `body` to `path` over a raw connection, read until `marker` has arrived, then
    close the connection: a caller that goes away mid-answer."""
    host, port = base_url.removeprefix("http://").split(":")
    raw = json.dumps(body).encode()
    with socket.create_connection((host, int(port))) as conn:
        conn.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n".encode()
            + f"Authorization: Bearer {API_KEY}\r\nContent-Length: {len(raw)}\r\n\r\n".encode()
            + raw
        )
        received = b""
        while marker not in received:
            received += conn.recv(4096)


def idle_soon(base_url: str) -> None:
    """The engine at `base_url` has nothing in flight, at the latest 3 s from now: its work was
    stopped, not finished (the slow engines' answers take 6 s and more; the margin is for a
    busy machine)."""
    started = time.monotonic()
    wait_for(lambda: metric(base_url, "prsm_engine_in_flight") == 0, 10)
    assert time.monotonic() - started < 3.0


@contextlib.contextmanager
def slow_fixed_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """`prsm serve` with a fixed engine that takes 6 s for its 6 words, one a second."""
    env = {
        "PRSM_ENGINE__KIND": "fixed",
        "PRSM_ENGINE__FIXED_ANSWER": "one two three four five six",
        "PRSM_ENGINE__FIXED_DELAY_SECONDS": "6",
    }
    with prsm_serve(tmp_path, env=env) as server:
        yield server


@contextlib.contextmanager
def socket_server(handle: Callable[[socket.socket], None]) -> Iterator[str]:
    """A raw TCP server on loopback, `handle(connection)` in a thread per connection, for
    upstreams that misbehave in ways no HTTP server library will; its base URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stopping = threading.Event()

    def accept() -> None:
        while not stopping.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=_handled, args=(handle, connection), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stopping.set()
        acceptor.join()
        listener.close()


def _handled(handle: Callable[[socket.socket], None], connection: socket.socket) -> None:
    with connection, contextlib.suppress(OSError):
        handle(connection)


def read_request(connection: socket.socket, buffered: bytearray) -> bytes | None:
    """The next request (head and content-length body) on `connection`; None once the peer
    closed. `buffered` carries bytes read past it to the next call."""
    while b"\r\n\r\n" not in buffered:
        chunk = connection.recv(65536)
        if not chunk:
            return None
        buffered += chunk
    end = buffered.index(b"\r\n\r\n") + 4
    head = bytes(buffered[:end])
    found = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    total = end + (int(found.group(1)) if found else 0)
    while len(buffered) < total:
        chunk = connection.recv(65536)
        if not chunk:
            return None
        buffered += chunk
    request = bytes(buffered[:total])
    del buffered[:total]
    return request


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and SIGKILL if it has not exited 20 s later."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until_ready(
    url: str,
    deadline: float,
    process: subprocess.Popen[bytes],
    verify: ssl.SSLContext | bool = True,
) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before it was ready")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=1, verify=verify).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} was not ready in time")


@dataclass
class ServerProcess:
    """A `prsm serve` process; `log` is its stderr (JSON lines)."""

    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def log_entries(self) -> list[dict[str, object]]:
        entries = []
        for line in self.log.splitlines():
            with contextlib.suppress(ValueError):
                entries.append(json.loads(line))
        return entries

    def wait_for_log(
        self, predicate: Callable[[dict[str, object]], bool], count: int
    ) -> list[dict[str, object]]:
        """The log entries matching `predicate`, once there are `count` (lines written after
        the response was sent arrive a moment later)."""
        deadline = time.monotonic() + 10
        while True:
            found = [e for e in self.log_entries() if predicate(e)]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)


@contextlib.contextmanager
def prsm_serve(
    tmp_path: Path,
    *args: str,
    env: dict[str, str] | None = None,
    ready_timeout: float = 120.0,
    port: int | None = None,
    ready_path: str = "/ready",
    tls: ssl.SSLContext | None = None,
    url_host: str = "127.0.0.1",
) -> Iterator[ServerProcess]:
    """Run `python -m prsm serve` on `port` (a free one by default) until the block ends.
    With `tls` (a client context; set `PRSM_TLS__*` in `env`) it serves and is probed over
    HTTPS."""
    port = port or free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PRSM_")}
    full_env |= {
        "PRSM_API_KEYS": API_KEY,
        # The deployment's own key: the tests' workers use it, so it may show job tokens.
        "PRSM_API_KEY": API_KEY,
        # The tests' callback receivers listen on this machine: callbacks may reach it.
        "PRSM_JOBS__CALLBACK_ALLOW": LOOPBACK_CALLBACKS,
        "PRSM_STATE_DIR": str(tmp_path / "state"),
        "PRSM_LOG_FORMAT": "json",
        "PRSM_SERVER__DRAIN_SECONDS": NO_DRAIN_GRACE,
    }
    full_env |= env or {}
    log_path = tmp_path / f"serve-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "prsm", "serve", "--port", str(port), *args],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base_url = f"{'https' if tls else 'http'}://{url_host}:{port}"
    try:
        deadline = time.monotonic() + ready_timeout
        wait_until_ready(base_url + ready_path, deadline, process, verify=tls or True)
        yield ServerProcess(base_url, process, log_path)
    finally:
        stop_process(process)


@dataclass
class GatewayProcess:
    base_url: str
    process: subprocess.Popen[bytes]
    config_path: Path
    log_path: Path

    def reconfigure(self, config: dict[str, Any]) -> None:
        """Write a new config and SIGHUP the gateway (it reloads in the background)."""
        self.config_path.write_text(json.dumps(config))
        self.process.send_signal(signal.SIGHUP)


@contextlib.contextmanager
def prsm_gateway(
    tmp_path: Path, config: dict[str, Any], env: dict[str, str] | None = None
) -> Iterator[GatewayProcess]:
    """Run `python -m prsm gateway --config <config as a file>` until the block ends."""
    port = free_port()
    config_path = tmp_path / f"gateway-{port}.yaml"
    config_path.write_text(json.dumps(config))  # JSON is YAML
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PRSM_")}
    full_env |= {"PRSM_LOG_FORMAT": "json", "PRSM_GATEWAY__DRAIN_SECONDS": NO_DRAIN_GRACE}
    full_env |= env or {}
    log_path = tmp_path / f"gateway-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "prsm", "gateway", "--config", str(config_path),
             "--port", str(port)],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base_url + "/health", time.monotonic() + 30, process)
        yield GatewayProcess(base_url, process, config_path, log_path)
    finally:
        stop_process(process)


@dataclass
class Certificates:
    """PEM files made for one test: a CA and, from it, a server certificate for `server_names`
    and client certificates on demand."""

    directory: Path
    server_names: tuple[str, ...] = ("127.0.0.1", "localhost")
    ca: trustme.CA = field(default_factory=trustme.CA)

    def __post_init__(self) -> None:
        self.ca.cert_pem.write_to_path(self.ca_file)
        server = self.ca.issue_cert(*self.server_names)
        server.cert_chain_pems[0].write_to_path(self.directory / "server.pem")
        server.private_key_pem.write_to_path(self.directory / "server.key")

    @property
    def ca_file(self) -> Path:
        return self.directory / f"ca-{id(self.ca)}.pem"

    def server_env(self, client_ca: Path | None = None, **more: str) -> dict[str, str]:
        """`prsm serve` settings for HTTPS, and mTLS against `client_ca`."""
        env = {
            "PRSM_TLS__CERT_FILE": str(self.directory / "server.pem"),
            "PRSM_TLS__KEY_FILE": str(self.directory / "server.key"),
        }
        if client_ca is not None:
            env["PRSM_TLS__CLIENT_CA_FILE"] = str(client_ca)
        return env | more

    def client(self, common_name: str, *names: str) -> tuple[Path, Path]:
        """A client certificate and key for `common_name` (and DNS `names`; without any, one
        made from `common_name`: a certificate's subjectAltName may not be empty, RFC 5280)."""
        leaf = self.ca.issue_cert(
            *(names or (f"{common_name}.clients.test",)), common_name=common_name
        )
        cert, key = self.directory / f"{common_name}.pem", self.directory / f"{common_name}.key"
        leaf.cert_chain_pems[0].write_to_path(cert)
        leaf.private_key_pem.write_to_path(key)
        return cert, key

    def context(self, client: str | None = None) -> ssl.SSLContext:
        """A client context trusting this CA, presenting `client`'s certificate if named."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if client is not None:
            context.load_cert_chain(*map(str, self.client(client)))
        return context


@contextlib.contextmanager
def fixed_instances(tmp_path: Path, names: str, **env: str) -> Iterator[dict[str, ServerProcess]]:
    """One `prsm serve` with the fixed engine per letter of `names`, each answering its
    letter, so a test can tell which instance answered."""
    with contextlib.ExitStack() as stack:
        servers = {}
        for name in names:
            (tmp_path / name).mkdir(exist_ok=True)
            settings = {"PRSM_ENGINE__KIND": "fixed", "PRSM_ENGINE__FIXED_ANSWER": name} | env
            servers[name] = stack.enter_context(prsm_serve(tmp_path / name, env=settings))
        yield servers


@contextlib.asynccontextmanager
async def local_app(path: str, handler: Any, *more: tuple[str, str, Any]) -> AsyncIterator[str]:
    """An aiohttp app answering GET `path` with `handler` (and each further `(method, path,
    handler)`), on a free loopback port; yields its base URL. For test doubles of services
    that cannot run here (Consul, Kubernetes, an OAuth2 provider)."""
    app = web.Application()
    app.router.add_get(path, handler)
    for method, other_path, other in more:
        app.router.add_route(method, other_path, other)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@dataclass
class Reply:
    status: int
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class ScriptedServer:
    """A real HTTP server on loopback that answers from a script, then repeats the last reply.

    For the statuses a PRSM server will not produce on demand (502, 429 ...). It records every
    request's path and headers.
    """

    replies: list[Reply]
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    base_url: str = ""

    def _next(self) -> Reply:
        return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]


@contextlib.contextmanager
def scripted_server(*replies: Reply) -> Iterator[ScriptedServer]:
    script = ScriptedServer(list(replies))
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            with lock:
                script.requests.append((self.path, dict(self.headers.items())))
                script.bodies.append(body)
                reply = script._next()
            time.sleep(reply.delay)
            self.send_response(reply.status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(reply.body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            with contextlib.suppress(OSError):  # the client may have given up waiting
                self.wfile.write(reply.body)

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    script.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield script
    finally:
        server.shutdown()
        server.server_close()


def query_reply(answer: str = "ok", correlation_id: str = "cid-1") -> Reply:
    """A valid query answer body, as the PRSM API sends it."""
    body = {
        "data": {
            "answer": answer,
            "confidence": 0.5,
            "usage": {"tokens": 3, "promptTokens": 2, "completionTokens": 1},
            "model": "scripted",
        },
        "correlationId": correlation_id,
    }
    return Reply(200, json.dumps(body).encode())


@contextlib.contextmanager
def prsm_worker(tmp_path: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """Run `python -m prsm worker` until the block ends; its log is `worker-<pid>.log`."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PRSM_")}
    full_env |= {"PRSM_LOG_FORMAT": "json", "PRSM_JOBS__METRICS_PORT": "0"} | env
    log_path = tmp_path / f"worker-{time.monotonic_ns()}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "prsm", "worker"],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while "worker started" not in log_path.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{log_path.read_text()}")
            time.sleep(0.05)
        yield process
    finally:
        stop_process(process)


@dataclass
class Collector:
    """An OTLP/HTTP receiver: `POST /v1/traces` with an ExportTraceServiceRequest."""

    url: str = ""
    spans: list[OtlpSpan] = field(default_factory=list)

    async def wait_for(self, name: str, count: int = 1) -> list[OtlpSpan]:
        deadline = time.monotonic() + 15
        while len(found := [s for s in self.spans if s.name == name]) < count:
            assert time.monotonic() < deadline, f"no {name!r} span; got {self.spans}"
            await asyncio.sleep(0.05)
        return found


@contextlib.asynccontextmanager
async def collector_app() -> AsyncIterator[Collector]:
    """An OTLP/HTTP receiver on a free loopback port, decoding the protobuf it is sent."""
    state = Collector()

    async def traces(request: web.Request) -> web.Response:
        message = ExportTraceServiceRequest.FromString(await request.read())
        for resource in message.resource_spans:
            for scope in resource.scope_spans:
                state.spans.extend(scope.spans)
        reply = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=reply, content_type="application/x-protobuf")

    async def index(_: web.Request) -> web.Response:
        return web.Response(text="OTLP receiver")

    async with local_app("/", index, ("POST", "/v1/traces", traces)) as url:
        state.url = url
        yield state


def worker_env(redis_url: str, api: str, **extra: str) -> dict[str, str]:
    """A test worker's environment: Redis, the API with the tests' key, callbacks signed with
    `CALLBACK_SECRET` to loopback, and short heartbeat, sweep and retry delay."""
    return {
        "PRSM_REDIS_URL": redis_url,
        "PRSM_BASE_URL": api,
        "PRSM_API_KEY": API_KEY,
        "PRSM_JOBS__CALLBACK_SECRET": CALLBACK_SECRET,
        "PRSM_JOBS__CALLBACK_ALLOW": LOOPBACK_CALLBACKS,
        "PRSM_JOBS__HEARTBEAT_SECONDS": "2",
        "PRSM_JOBS__SWEEP_SECONDS": "1",
        "PRSM_JOBS__RETRY_DELAY_SECONDS": "0.2",
    } | extra
