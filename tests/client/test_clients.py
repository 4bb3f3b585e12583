"""`PRSMClient` and `AsyncPRSMClient`, each test run on both against real HTTP servers."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

from prsm import AsyncPRSMClient, PRSMClient, RetryPolicy
from prsm.client import HealthStatus, QueryResult, StreamChunk
from prsm.contracts import NOT_RUN_HEADER
from prsm.errors import (
    AuthenticationError,
    BadRequestError,
    ConnectError,
    ConnectionLostError,
    PRSMError,
    ServiceUnavailableError,
    TimeoutError,
    ValidationError,
)
from tests.support import (
    API_KEY,
    Reply,
    ServerProcess,
    free_port,
    query_reply,
    read_request,
    scripted_server,
)

FAST_RETRY = RetryPolicy(retries=2, backoff_initial=0.001, backoff_max=0.01)
NOT_RUN = {NOT_RUN_HEADER: "true"}


class Client:
    """One interface over both clients, so every test runs on the sync and the async one."""

    def __init__(self, kind: str, **options: Any) -> None:
        self.kind = kind
        self._client: Any = (PRSMClient if kind == "sync" else AsyncPRSMClient)(**options)

    async def query(self, prompt: str, **options: Any) -> QueryResult:
        if self.kind == "sync":
            return await asyncio.to_thread(self._client.query, prompt, **options)
        return await self._client.query(prompt, **options)  # type: ignore[no-any-return]

    async def streamed(self, prompt: str, **options: Any) -> list[StreamChunk]:
        if self.kind == "sync":
            return await asyncio.to_thread(lambda: list(self._client.stream(prompt, **options)))
        return [chunk async for chunk in self._client.stream(prompt, **options)]

    async def health(self) -> HealthStatus:
        if self.kind == "sync":
            return await asyncio.to_thread(self._client.health)
        return await self._client.health()  # type: ignore[no-any-return]

    async def close(self) -> None:
        if self.kind == "sync":
            self._client.close()
        else:
            await self._client.aclose()


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def connect(kind: str) -> AsyncIterator[Any]:
    made: list[Client] = []

    def factory(**options: Any) -> Client:
        client = Client(kind, **options)
        made.append(client)
        return client

    yield factory
    for client in made:
        await client.close()


async def test_query_returns_a_typed_result(connect: Any, fixed_server: ServerProcess) -> None:
    """A real server's answer arrives as QueryResult with usage and correlation id."""
    client = connect(base_url=fixed_server.base_url, api_key=API_KEY)
    result = await client.query("What is the capital of France?", user_id="u1", max_tokens=5)
    assert result.answer == "Paris."
    assert result.usage.tokens == result.usage.prompt_tokens + result.usage.completion_tokens
    assert 0 <= result.confidence <= 1
    assert result.model == "fixed"
    assert len(result.correlation_id) == 32


async def test_a_query_names_its_model(connect: Any, models_server: ServerProcess) -> None:
    """`model=` reaches the model by id or alias; the answer names the id."""
    client = connect(base_url=models_server.base_url, api_key=API_KEY)
    result = await client.query("hi", user_id="u1", model="gpt-4o-mini", max_tokens=5)
    assert (result.answer, result.model) == ("Paris.", "fixed-chat")
    chunks = await client.streamed("hi", user_id="u1", model="fixed-chat")
    assert chunks[-1].result is not None
    assert chunks[-1].result.model == "fixed-chat"


async def test_correlation_id_is_sent_and_returned(
    connect: Any, fixed_server: ServerProcess
) -> None:
    """A given correlation id reaches the server and comes back on the result."""
    client = connect(base_url=fixed_server.base_url, api_key=API_KEY)
    result = await client.query("hi", user_id="u1", correlation_id="trace-me-7")
    assert result.correlation_id == "trace-me-7"


async def test_health(connect: Any, fixed_server: ServerProcess) -> None:
    """health() returns the server's status object."""
    status = await connect(base_url=fixed_server.base_url).health()
    assert status.status == "healthy"
    assert status.version


async def test_wrong_key_is_authentication_error_with_correlation_id(
    connect: Any, fixed_server: ServerProcess
) -> None:
    """401 raises AuthenticationError carrying status, code and correlation id."""
    client = connect(base_url=fixed_server.base_url, api_key="wrong")
    with pytest.raises(AuthenticationError) as caught:
        await client.query("hi", user_id="u1")
    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_credentials"
    assert caught.value.correlation_id


async def test_retries_what_did_not_run_on_the_same_correlation_id(connect: Any) -> None:
    """A 503 marked not run, a 408, then success: three requests, one correlation id, a
    result."""
    with scripted_server(Reply(503, headers=NOT_RUN), Reply(408), query_reply("third")) as server:
        client = connect(base_url=server.base_url, retries=FAST_RETRY)
        result = await client.query("hi", user_id="u1")
    assert result.answer == "third"
    ids = {headers["X-Correlation-ID"] for _, headers in server.requests}
    assert len(server.requests) == 3
    assert len(ids) == 1


async def test_a_query_that_may_have_run_is_not_sent_again(connect: Any) -> None:
    """An unmarked 503, a 502 or a 504 (an engine that timed out spent tokens): the query may
    have run, so it is not sent again — it would be charged twice."""
    for status in (503, 502, 504):
        with scripted_server(Reply(status), query_reply()) as server:
            client = connect(base_url=server.base_url, retries=FAST_RETRY)
            with pytest.raises(PRSMError):
                await client.query("hi", user_id="u1")
        assert len(server.requests) == 1


async def test_retry_after_zero_is_honoured(connect: Any) -> None:
    """429 with Retry-After is retried (here after 0 s) and then succeeds."""
    with scripted_server(Reply(429, headers={"retry-after": "0"}), query_reply()) as server:
        client = connect(base_url=server.base_url, retries=FAST_RETRY)
        assert (await client.query("hi", user_id="u1")).answer == "ok"
    assert len(server.requests) == 2


async def test_gives_up_after_retries(connect: Any) -> None:
    """Always 503 saturated (marked not run): retries + 1 requests, then
    ServiceUnavailableError."""
    saturated = b'{"error": {"code": "saturated", "message": "m"}}'
    with scripted_server(Reply(503, saturated, NOT_RUN)) as server:
        client = connect(base_url=server.base_url, retries=FAST_RETRY)
        with pytest.raises(ServiceUnavailableError) as caught:
            await client.query("hi", user_id="u1")
    assert len(server.requests) == 3
    assert caught.value.code == "saturated"


@pytest.mark.parametrize(("status", "cls"), [(400, BadRequestError), (422, ValidationError)])
async def test_client_errors_are_not_retried(
    connect: Any, status: int, cls: type[Exception]
) -> None:
    """A 4xx other than 429 is raised after one request."""
    with scripted_server(Reply(status)) as server:
        client = connect(base_url=server.base_url, retries=FAST_RETRY)
        with pytest.raises(cls):
            await client.query("hi", user_id="u1")
    assert len(server.requests) == 1


async def test_refused_connection_is_connect_error(connect: Any) -> None:
    """Nothing listening: ConnectError, after the retries."""
    client = connect(base_url=f"http://127.0.0.1:{free_port()}", retries=FAST_RETRY)
    with pytest.raises(ConnectError, match="cannot reach"):
        await client.query("hi", user_id="u1")


async def test_an_answer_cut_off_midway_is_connection_lost_on_both(connect: Any) -> None:
    """The server dies after the headers, mid-body: ConnectionLostError on both clients alike
    — the query may have run, so neither retries it nor does `ServiceClient` fail it over."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def serve_half() -> None:
            connection, _ = listener.accept()
            with connection:
                read_request(connection, bytearray())  # closing with bytes unread: a reset
                connection.sendall(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b'content-length: 166\r\n\r\n{"data": {'
                )

        worker = threading.Thread(target=serve_half, daemon=True)
        worker.start()
        port = listener.getsockname()[1]
        client = connect(base_url=f"http://127.0.0.1:{port}", retries=0)
        with pytest.raises(ConnectionLostError, match="connection broke"):
            await client.query("hi", user_id="u1")
        worker.join(timeout=5)


async def test_slow_answer_is_timeout_error_and_not_retried(connect: Any) -> None:
    """An answer slower than the timeout raises TimeoutError after one request."""
    with scripted_server(Reply(200, delay=1.0)) as server:
        client = connect(base_url=server.base_url, timeout=0.2, retries=FAST_RETRY)
        with pytest.raises(TimeoutError):
            await client.query("hi", user_id="u1")
    assert len(server.requests) == 1


async def test_saturation_from_a_real_server_is_retried(connect: Any, tmp_path: Any) -> None:
    """A real server answering 503 saturated is retried until a slot frees."""
    from tests.support import prsm_serve

    env = {
        "PRSM_ENGINE__KIND": "fixed",
        "PRSM_ENGINE__FIXED_DELAY_SECONDS": "0.2",
        "PRSM_ENGINE__MAX_QUEUE": "0",
    }
    with prsm_serve(tmp_path, env=env) as server:
        policy = RetryPolicy(retries=10, backoff_initial=0.05, backoff_max=0.2)
        clients = [
            connect(base_url=server.base_url, api_key=API_KEY, retries=policy) for _ in range(3)
        ]
        # Retry-After is 1 s, so each refused client waits about a second before trying again.
        results = await asyncio.gather(*(c.query("hi", user_id="u") for c in clients))
        saturated = server.log.count('"status": 503')
    assert [r.answer for r in results] == ["This is a fixed answer."] * 3
    assert saturated >= 1
