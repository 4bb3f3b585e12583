"""Bounds on request heads and slow senders, against real `prsm serve` and `prsm gateway`
processes over raw sockets."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import httpx
import pytest
import requests
import uvicorn
from uvicorn.server import ServerState

from prsm.edge.protocol import GuardedHttpProtocol
from tests.support import ServerProcess, prsm_gateway, prsm_serve

LIMITS = {
    "PRSM_ENGINE__KIND": "fixed",
    "PRSM_HTTP__HEADER_TIMEOUT_SECONDS": "1",
    "PRSM_HTTP__BODY_TIMEOUT_SECONDS": "1",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """`prsm serve` with the default header bounds and 1 s read timeouts."""
    with prsm_serve(tmp_path_factory.mktemp("limits"), env=LIMITS) as running:
        yield running


def address(base_url: str) -> tuple[str, int]:
    host, port = base_url.removeprefix("http://").split(":")
    return host, int(port)


def exchange(
    base_url: str, data: bytes, *, wait: float = 10.0
) -> tuple[int, dict[str, str], bytes]:
    """Send `data`, read until the server closes; the status, headers and body."""
    with socket.create_connection(address(base_url), timeout=wait) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def send_until_closed(base_url: str, start: bytes, most: int = 20 * 1024 * 1024) -> int:
    """Send `start`, then header bytes until the server closes the connection; how many."""
    sent = 0
    with socket.create_connection(address(base_url), timeout=10) as sock:
        sock.sendall(start)
        try:
            while sent < most:
                sock.sendall(b"a" * 65536)
                sent += 65536
        except (BrokenPipeError, ConnectionResetError):
            return sent
    return sent


def request(path: str = "/health", *, headers: list[str] | None = None, body: bytes = b"") -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: t", *(headers or [])]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def assert_json_error(
    status: int, headers: dict[str, str], body: bytes, want: int, code: str
) -> None:
    assert status == want
    assert headers["content-type"] == "application/json"
    error = json.loads(body)
    assert error["error"]["code"] == code
    assert error["correlationId"] == headers["x-correlation-id"]


def test_a_huge_header_is_431_without_reading_it_all(server: ServerProcess) -> None:
    """A 100 KB header is refused with 431 JSON; a 20 MB one too, before it is all sent."""
    assert_json_error(
        *exchange(server.base_url, request(headers=["X-Big: " + "a" * 100_000])),
        431,
        "header_too_large",
    )
    sent = send_until_closed(server.base_url, b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: ")
    assert sent < 20 * 1024 * 1024
    assert exchange(server.base_url, request())[0] == 200  # and it serves on


def test_too_many_headers_is_431(server: ServerProcess) -> None:
    """1000 small headers: 431 too_many_headers."""
    many = [f"X-H{i}: v" for i in range(1000)]
    assert_json_error(*exchange(server.base_url, request(headers=many)), 431, "too_many_headers")


def test_a_head_that_stops_is_408(server: ServerProcess) -> None:
    """Half a request head, then silence: 408 header_timeout after ~1 s, connection closed."""
    started = time.monotonic()
    status, headers, body = exchange(server.base_url, b"GET /health HTTP/1.1\r\nHost: t\r\n")
    assert 0.8 < time.monotonic() - started < 5
    assert_json_error(status, headers, body, 408, "header_timeout")


def test_a_declared_body_that_never_comes_is_408(server: ServerProcess) -> None:
    """Content-Length 100, 10 bytes sent: 408 body_timeout after ~1 s."""
    data = request("/api/v1/query", headers=["Content-Length: 100"], body=b"0123456789")
    data = data.replace(b"GET ", b"POST ", 1)
    started = time.monotonic()
    status, headers, body = exchange(server.base_url, data)
    assert time.monotonic() - started < 5
    assert_json_error(status, headers, body, 408, "body_timeout")


def test_many_silent_connections_are_all_closed(server: ServerProcess) -> None:
    """200 connections that never finish their head are all closed by the server."""
    socks = [socket.create_connection(address(server.base_url), timeout=10) for _ in range(200)]
    try:
        for sock in socks:
            sock.sendall(b"GET / HTTP/1.1\r\n")
        closed = 0
        for sock in socks:
            while sock.recv(65536):
                pass
            closed += 1
    finally:
        for sock in socks:
            sock.close()
    assert closed == 200


def test_the_gateway_refuses_a_huge_header_itself(server: ServerProcess, tmp_path: Path) -> None:
    """Through `prsm gateway`: a 100 KB header is 431 at the gateway, never forwarded."""
    config = {"pools": {"p": {"discovery": {"kind": "static", "urls": [server.base_url]}}},
              "routes": [{"prefix": "/", "pool": "p"}]}  # fmt: skip
    with prsm_gateway(tmp_path, config) as gateway:
        big = request("/health", headers=["X-Big: " + "a" * 100_000])
        assert_json_error(*exchange(gateway.base_url, big), 431, "header_too_large")
        assert exchange(gateway.base_url, request("/health"))[0] == 200


BIG_BODY = b"x" * (3 << 20)  # three times the default body limit


def post_with_urllib(url: str) -> int:
    request = urllib.request.Request(url, data=BIG_BODY, method="POST")  # noqa: S310
    request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
            return int(response.status)
    except urllib.error.HTTPError as refused:
        return refused.code


def post_with_requests(url: str) -> int:
    return requests.post(url, data=BIG_BODY, timeout=30).status_code


def post_with_httpx(url: str) -> int:
    return httpx.post(url, content=BIG_BODY, timeout=30).status_code


def post_with_aiohttp(url: str) -> int:
    async def post() -> int:
        async with aiohttp.ClientSession() as session, session.post(url, data=BIG_BODY) as r:
            return r.status

    return asyncio.run(post())


CLIENTS = [post_with_urllib, post_with_requests, post_with_httpx, post_with_aiohttp]


@pytest.fixture(scope="module")
def gateway(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = {"pools": {"p": {"discovery": {"kind": "static", "urls": [server.base_url]}}},
              "routes": [{"prefix": "/", "pool": "p"}]}  # fmt: skip
    with prsm_gateway(tmp_path_factory.mktemp("linger"), config) as running:
        yield running.base_url


@pytest.mark.parametrize("post", CLIENTS, ids=lambda f: f.__name__.removeprefix("post_with_"))
@pytest.mark.parametrize("through", ["direct", "gateway"])
def test_every_common_client_sees_the_413_for_a_body_too_large(
    server: ServerProcess, gateway: str, post: Callable[[str], int], through: str
) -> None:
    """A 3 MB body, 20 times: the server answers 413 before reading it and lingers while it
    arrives, so even clients that send it all before reading (urllib) get the 413, not a
    reset — directly and through the gateway."""
    base = server.base_url if through == "direct" else gateway
    statuses = []
    for _ in range(20):
        try:
            statuses.append(post(base + "/api/v1/query"))
        except (OSError, requests.ConnectionError, httpx.TransportError, aiohttp.ClientError) as e:
            statuses.append(type(e).__name__)  # type: ignore[arg-type]
    assert statuses == [413] * 20


class RecordedTransport(asyncio.Transport):
    """The socket's side of a connection: what was written to it, call by call."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 1), "sockname": ("127.0.0.1", 2)}.get(name, default)


def connected() -> tuple[GuardedHttpProtocol, RecordedTransport]:
    async def app(scope: object, receive: object, send: object) -> None:
        raise AssertionError("no request is parsed here")

    socket_side = RecordedTransport()
    config = uvicorn.Config(app, lifespan="off")
    protocol = GuardedHttpProtocol(config=config, server_state=ServerState(), app_state={})
    protocol.connection_made(socket_side)
    return protocol, socket_side


async def test_what_one_turn_of_the_loop_writes_goes_out_as_one_write() -> None:
    """A response's head and body (uvicorn writes them apart) reach the socket in one write,
    once the turn that wrote them is over."""
    protocol, socket_side = connected()
    protocol.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    protocol.transport.write(b"{}")
    assert socket_side.writes == []
    await asyncio.sleep(0)
    assert socket_side.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    protocol.transport.write(b"next")
    await asyncio.sleep(0)
    assert socket_side.writes[1:] == [b"next"]
    protocol.connection_lost(None)


async def test_closing_writes_what_the_turn_held_first() -> None:
    """An answer written just before the connection is closed is not lost."""
    protocol, socket_side = connected()
    protocol.transport.write(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
    protocol.transport.close()
    assert socket_side.writes == [b"HTTP/1.1 408 Request Timeout\r\n\r\n"]
    assert socket_side.closed
    await asyncio.sleep(0)
    assert len(socket_side.writes) == 1
    protocol.connection_lost(None)


async def test_a_large_body_is_not_held_back() -> None:
    """Past 64 KiB a connection writes at once, so the transport's flow control (which pauses
    a streaming application) sees the bytes."""
    protocol, socket_side = connected()
    protocol.transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    protocol.transport.write(b"x" * 65536)
    assert [len(w) for w in socket_side.writes] == [19 + 65536]
    protocol.transport.write(b"end")
    assert protocol.transport.get_write_buffer_size() == 3
    await asyncio.sleep(0)
    assert socket_side.writes[1:] == [b"end"]
    protocol.connection_lost(None)
