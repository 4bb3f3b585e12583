"""The gateway's upstream client against real servers on loopback: aiohttp's server for
keep-alive and chunked streams, raw asyncio servers for the ways a connection can end."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from prsm.errors import ConnectError, ConnectionLostError
from prsm.gateway.upstream import UpstreamPool
from tests.support import free_port, local_app

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def body_of(pool: UpstreamPool, path: str = "/") -> tuple[int, bytes]:
    response = await pool.send("GET", path, [(b"accept", b"*/*")], b"")
    try:
        return response.status, b"".join([c async for c in response.chunks()])
    finally:
        response.release()


@contextlib.asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()


async def test_keep_alive_reuses_one_connection_and_streams_chunks() -> None:
    peers: list[object] = []

    async def hello(request: web.Request) -> web.StreamResponse:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for part in (b"one ", b"two ", b"three"):
            await response.write(part)
        await response.write_eof()
        return response

    async with local_app("/", hello) as url:
        pool = UpstreamPool(url)
        first = await body_of(pool)
        second = await body_of(pool)
        await pool.aclose()
    assert first == second == (200, b"one two three")
    assert len(peers) == 2
    assert peers[0] == peers[1]  # the same client socket: the connection was kept


async def test_a_connection_closed_while_idle_is_replaced() -> None:
    """The server closes every connection after answering: the next request still works."""
    answered = 0

    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal answered
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        answered += 1
        await asyncio.sleep(0.05)
        writer.close()

    async with raw_server(once) as url:
        pool = UpstreamPool(url)
        assert await body_of(pool) == (200, b"ok")
        await asyncio.sleep(0.2)  # the server has closed the idle connection by now
        assert await body_of(pool) == (200, b"ok")
        await pool.aclose()
    assert answered == 2


async def test_a_body_cut_short_is_connection_lost() -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b")
        await writer.drain()
        writer.close()

    async with raw_server(cut) as url:
        pool = UpstreamPool(url)
        response = await pool.send("GET", "/", [], b"")
        with pytest.raises(ConnectionLostError):
            _ = [c async for c in response.chunks()]
        response.release()
        await pool.aclose()


async def test_a_body_delimited_by_closing_is_complete() -> None:
    async def close_delimited(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end")
        await writer.drain()
        writer.close()

    async with raw_server(close_delimited) as url:
        pool = UpstreamPool(url)
        assert await body_of(pool) == (200, b"until the end")
        await pool.aclose()


async def test_nothing_listening_is_connect_failed() -> None:
    pool = UpstreamPool(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ConnectError):
        await pool.send("GET", "/", [], b"")


def test_only_http_origins() -> None:
    with pytest.raises(ValueError, match="not an http"):
        UpstreamPool("ftp://example.com")


def keep_alive_then_hang_up(posts: list[bytes]) -> Handler:
    """Answers GETs and keeps the connection; takes the first POST and, half a second later,
    closes without answering (an upstream dying on it); answers any later POST."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if head.startswith(b"POST"):
                    posts.append(head)
                    await reader.readexactly(2)  # the body, "{}"
                    if len(posts) == 1:
                        await asyncio.sleep(0.5)
                        writer.close()
                        return
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()

    return serve


async def test_a_post_the_upstream_took_on_a_reused_connection_is_not_sent_again() -> None:
    """A kept-alive connection breaks after the upstream read the POST: ConnectionLostError (it
    may have run), and the upstream saw it once."""
    posts: list[bytes] = []
    async with raw_server(keep_alive_then_hang_up(posts)) as url:
        pool = UpstreamPool(url)
        assert await body_of(pool) == (200, b"ok")  # leaves a connection to reuse
        with pytest.raises(ConnectionLostError):
            await pool.send("POST", "/", [], b"{}")
        await pool.aclose()
    assert len(posts) == 1


async def test_a_replayable_request_goes_again_on_a_fresh_connection() -> None:
    """The same break, for a request the caller says may be sent twice: resent, answered."""
    posts: list[bytes] = []
    async with raw_server(keep_alive_then_hang_up(posts)) as url:
        pool = UpstreamPool(url)
        assert await body_of(pool) == (200, b"ok")
        response = await pool.send("POST", "/", [], b"{}", replayable=True)
        assert response.status == 200
        response.release()
        await pool.aclose()
    assert len(posts) == 2


async def test_an_idle_connection_past_its_time_is_not_reused() -> None:
    """Idle longer than `idle_seconds`: closed, and the next request opens another."""
    peers: list[object] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peername"))
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()

    async with raw_server(serve) as url:
        pool = UpstreamPool(url, idle_seconds=0.05)
        assert await body_of(pool) == (200, b"ok")
        assert await body_of(pool) == (200, b"ok")  # at once: the same connection
        await asyncio.sleep(0.1)
        assert await body_of(pool) == (200, b"ok")
        await pool.aclose()
    assert len(peers) == 2
