"""Shared by the benchmark scripts: start servers on loopback, drive them, print tables."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import free_port, wait_until_ready  # noqa: E402
from tests.support import metric as metric  # noqa: E402 - for the scripts: one reading of /metrics

API_KEY = "bench-key"
PIDS: dict[str, int] = {}
"""The process id of each server `run_server` started, by base URL."""


@contextlib.contextmanager
def run_server(
    argv: list[str], ready_path: str, env: dict[str, str] | None = None
) -> Iterator[str]:
    """Start `argv` (which must bind the port given as {port}) and yield its base URL."""
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PRSM_")}
    process = subprocess.Popen(
        [part.format(port=port) for part in argv],
        env=clean | (env or {}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    PIDS[base] = process.pid
    try:
        wait_until_ready(base + ready_path, time.monotonic() + 120, process)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def prsm_serve(env: dict[str, str]) -> contextlib.AbstractContextManager[str]:
    argv = [sys.executable, "-m", "prsm", "serve", "--port", "{port}"]
    settings = {"PRSM_API_KEYS": API_KEY, "PRSM_API_KEY": API_KEY, "PRSM_LOG_LEVEL": "warning"}
    return run_server(argv, "/ready", settings | env)


def rss_mib(pid: int) -> float:
    """The resident memory of process `pid` now, MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]


@contextlib.contextmanager
def peak_rss(pid: int, every: float = 0.02) -> Iterator[list[float]]:
    """Sample `pid`'s resident memory while the block runs; the list holds the peak, MiB."""
    peak = [rss_mib(pid)]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(every):
            peak[0] = max(peak[0], rss_mib(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        done.set()
        sampler.join()
        peak[0] = max(peak[0], rss_mib(pid))


def wrk_arguments(doc: str, body: bytes) -> tuple[argparse.Namespace, dict[str, Any]]:
    """The command line of a wrk benchmark (`--connections`, `--seconds`), and the load it
    asks for with `body`."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    return args, {"body": body, "connections": args.connections, "seconds": args.seconds}


def wrk(url: str, *, body: bytes, connections: int, seconds: int) -> dict[str, float]:
    """POST `body` to `url` with wrk; requests/s and latency percentiles in ms."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed (Debian: apt-get install wrk)")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\n'
            f"wrk.body = [[{body.decode()}]]\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
            f'wrk.headers["Authorization"] = "Bearer {API_KEY}"\n'
        )
    try:
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{seconds}s",
                "--latency",
                "-s",
                script.name,
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(script.name)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"{errors.group(1)} requests failed during the run:\n{out}")
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for pct in ("50", "99"):
        value, unit = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        result[f"p{pct}"] = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    return result


def post_json(base: str, path: str, body: bytes) -> httpx.Response:
    return httpx.post(
        base + path, content=body, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=120
    )


NGINX = """
worker_processes 1;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
{servers}
}}
"""


@contextlib.contextmanager
def run_nginx(
    servers: str, ready_path: str, port: int, files: dict[str, str] | None = None
) -> Iterator[None]:
    """One nginx worker serving `servers` (its `http` block's contents; `{dir}` stands for its
    own directory, where `files` are written) until the block ends; ready once `port` answers
    `ready_path`."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        raise SystemExit("nginx is needed (Debian: apt-get install nginx)")
    with tempfile.TemporaryDirectory(prefix="prsm-nginx-") as name:
        directory = Path(name)
        directory.chmod(0o755)  # nginx's worker runs as another user
        for file_name, text in (files or {}).items():
            (directory / file_name).write_text(text)
            (directory / file_name).chmod(0o644)
        conf = directory / "nginx.conf"
        conf.write_text(NGINX.format(dir=directory, servers=servers.replace("{dir}", name)))
        process = subprocess.Popen(
            [binary, "-p", name, "-c", str(conf), "-g", "daemon off;"],
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until_ready(f"http://127.0.0.1:{port}{ready_path}", time.monotonic() + 10, process)
            yield
        finally:
            process.terminate()
            process.wait(timeout=10)
