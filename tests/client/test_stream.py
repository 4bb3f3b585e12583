"""The SDK's `stream`: sync and async on one core, errors before and after the answer began,
failover only before it began, and leaving early stopping the generation."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from prsm import PRSMClient, StreamChunk
from prsm.client import AsyncPRSMClient, ServiceClient, SyncServiceClient
from prsm.contracts import NOT_RUN_HEADER
from prsm.errors import AuthenticationError, ServiceUnavailableError, TransportError
from prsm.sd import StaticDiscovery
from tests.support import (
    API_KEY,
    Reply,
    ServerProcess,
    idle_soon,
    scripted_server,
    slow_fixed_server,
)

SSE = {"content-type": "text/event-stream"}


def event(name: str, data: dict[str, object]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def joined(chunks: list[StreamChunk]) -> str:
    return "".join(c.text for c in chunks)


def test_sync_stream_yields_text_then_the_result(fixed_server: ServerProcess) -> None:
    """Text chunks join to the answer the last chunk's result carries, with usage."""
    with PRSMClient(fixed_server.base_url, api_key=API_KEY) as client:
        chunks = list(client.stream("Capital of France?", user_id="u1"))
    *text, last = chunks
    assert last.result is not None
    assert joined(text) == last.result.answer == "Paris."
    assert last.result.usage.tokens > 0
    assert last.result.correlation_id


def test_async_stream_matches_the_sync_one(fixed_server: ServerProcess) -> None:
    """`async for` over AsyncPRSMClient.stream gives the same chunks."""

    async def run() -> list[StreamChunk]:
        async with AsyncPRSMClient(fixed_server.base_url, api_key=API_KEY) as client:
            return [chunk async for chunk in client.stream("Capital?", user_id="u1")]

    chunks = asyncio.run(run())
    assert joined(chunks) == "Paris."
    assert chunks[-1].result is not None


def test_a_refusal_before_the_answer_is_the_usual_error(fixed_server: ServerProcess) -> None:
    """A wrong key: AuthenticationError as `query` raises it, before any chunk."""
    received, error = read_all(fixed_server.base_url, key="wrong")
    assert received == []
    assert isinstance(error, AuthenticationError)


def read_all(base_url: str, key: str = API_KEY) -> tuple[list[str], Exception | None]:
    """The texts a sync stream gave, and the error that ended it (None: it completed)."""
    received: list[str] = []
    with PRSMClient(base_url, api_key=key, retries=0) as client:
        try:
            for chunk in client.stream("q", user_id="u1"):
                received.append(chunk.text)
        except Exception as exc:  # what the stream raised is what is under test
            return received, exc
    return received, None


def test_an_error_event_is_raised_after_the_text_before_it() -> None:
    """A delta, then an `error` event: the chunk first, then ServiceUnavailableError with the
    event's code; a stream that stops without its final event is a TransportError."""
    failing = event("delta", {"text": "Half"}) + event(
        "error", {"error": {"code": "engine_unavailable", "message": "gone"}, "status": 503}
    )
    with scripted_server(Reply(200, failing, SSE)) as server:
        received, error = read_all(server.base_url)
    assert received == ["Half"]
    assert isinstance(error, ServiceUnavailableError)
    assert error.code == "engine_unavailable"
    with scripted_server(Reply(200, event("delta", {"text": "Cut"}), SSE)) as server:
        received, error = read_all(server.base_url)
    assert received == ["Cut"]
    assert isinstance(error, TransportError)
    assert "ended before its final event" in str(error)


def test_service_client_fails_over_before_the_answer_began(fixed_server: ServerProcess) -> None:
    """One instance refuses before acting (503 saturated, marked not run): the stream comes
    from the other."""

    async def run() -> list[StreamChunk]:
        saturated = Reply(503, b'{"error": {"code": "saturated"}}', {NOT_RUN_HEADER: "true"})
        with scripted_server(saturated) as busy:
            urls = [busy.base_url, fixed_server.base_url]
            async with ServiceClient(StaticDiscovery(urls), api_key=API_KEY) as prsm:
                chunks = []
                for _ in range(4):  # whichever instance the balancer picks first
                    chunks = [c async for c in prsm.stream("Capital?", user_id="u1")]
                    assert joined(chunks) == "Paris."
                return chunks

    assert asyncio.run(run())[-1].result is not None


def test_service_client_never_replays_a_stream_that_began() -> None:
    """An instance that broke off mid-answer: the error reaches the caller, no other instance
    is asked (the caller has already seen part of an answer)."""
    cut = Reply(200, event("delta", {"text": "Cut"}), SSE)

    async def run() -> int:
        with scripted_server(cut) as first, scripted_server(cut) as second:
            urls = [first.base_url, second.base_url]
            async with ServiceClient(StaticDiscovery(urls), api_key=API_KEY) as prsm:
                with pytest.raises(TransportError):
                    async for _ in prsm.stream("q", user_id="u1"):
                        pass
            return len(first.requests) + len(second.requests)

    assert asyncio.run(run()) == 1


def test_sync_service_client_streams(fixed_server: ServerProcess) -> None:
    """SyncServiceClient.stream runs the same pipeline on its loop."""
    with SyncServiceClient(StaticDiscovery([fixed_server.base_url]), api_key=API_KEY) as prsm:
        assert joined(list(prsm.stream("Capital?", user_id="u1"))) == "Paris."


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with slow_fixed_server(tmp_path_factory.mktemp("slow")) as server:
        yield server


def test_leaving_the_loop_early_stops_the_generation(slow_server: ServerProcess) -> None:
    """`break` after the first chunk closes the connection: the server's engine is free again
    within seconds."""
    with PRSMClient(slow_server.base_url, api_key=API_KEY) as client:
        for chunk in client.stream("Count.", user_id="u1"):
            assert chunk.text == "one"
            break
        idle_soon(slow_server.base_url)
