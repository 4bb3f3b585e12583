from __future__ import annotations

import asyncio

import httpx
import pytest

from prsm.config import load_settings
from prsm.contracts import Priority
from prsm.engines.llama import LlamaEngine
from prsm.errors import ServiceUnavailableError
from prsm.server import create_app
from prsm.server.admission import Admission
from tests.support import until


async def test_runs_up_to_concurrency_at_once() -> None:
    """With concurrency 2, two holders run and a third waits."""
    gate = Admission(2, max_queue=5, queue_timeout=5)
    await gate.acquire()
    await gate.acquire()
    third = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    assert (gate.in_flight, gate.waiting, third.done()) == (2, 1, False)
    gate.release()
    await third
    assert (gate.in_flight, gate.waiting) == (2, 0)


async def test_full_queue_is_refused_with_retry_after() -> None:
    """Past max_queue waiters, acquire fails at once with 503 `saturated`."""
    gate = Admission(1, max_queue=1, queue_timeout=5, retry_after=3)
    await gate.acquire()
    waiter = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    with pytest.raises(ServiceUnavailableError) as caught:
        await gate.acquire()
    assert (caught.value.code, caught.value.retry_after) == ("saturated", 3)
    waiter.cancel()


async def test_wait_longer_than_queue_timeout_is_refused() -> None:
    """A waiter that gets no slot within queue_timeout gets 503 and leaves the queue."""
    gate = Admission(1, max_queue=4, queue_timeout=0.01)
    await gate.acquire()
    with pytest.raises(ServiceUnavailableError, match="waited"):
        await gate.acquire()
    assert gate.waiting == 0
    gate.release()
    assert gate.in_flight == 0


async def test_high_priority_is_served_first_then_arrival_order() -> None:
    """Released slots go to high, then normal, then low; ties in arrival order."""
    gate = Admission(1, max_queue=10, queue_timeout=5)
    await gate.acquire()
    order: list[str] = []

    async def wait(name: str, priority: Priority) -> None:
        await gate.acquire(priority)
        order.append(name)
        gate.release()

    arrivals: list[tuple[str, Priority]] = [
        ("low", "low"),
        ("normal-1", "normal"),
        ("high", "high"),
        ("normal-2", "normal"),
    ]
    tasks = []
    for name, priority in arrivals:
        tasks.append(asyncio.create_task(wait(name, priority)))
        await asyncio.sleep(0)
    gate.release()
    await asyncio.gather(*tasks)
    assert order == ["high", "normal-1", "normal-2", "low"]


async def test_cancelled_waiter_does_not_leak_a_slot() -> None:
    """A waiter cancelled while queued leaves no slot taken and no queue entry."""
    gate = Admission(1, max_queue=4, queue_timeout=5)
    await gate.acquire()
    waiter = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    gate.release()
    assert (gate.in_flight, gate.waiting) == (0, 0)


async def test_slot_handed_over_while_cancelled_is_passed_on() -> None:
    """If a slot is handed to a waiter in the same tick it is cancelled, it goes to the next."""
    gate = Admission(1, max_queue=4, queue_timeout=5)
    await gate.acquire()
    first = asyncio.create_task(gate.acquire())
    second = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    gate.release()  # hands the slot to `first`...
    first.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await first
    await second
    assert (gate.in_flight, gate.waiting) == (1, 0)


async def test_slot_context_manager_releases_on_error() -> None:
    """`async with slot()` gives the slot back when the body raises."""
    gate = Admission(1, max_queue=0, queue_timeout=1)
    with pytest.raises(RuntimeError):
        async with gate.slot():
            raise RuntimeError("boom")
    assert gate.in_flight == 0


async def test_closed_admission_refuses_new_queries_and_keeps_the_others() -> None:
    """After close(): a new acquire gets the given 503; the running query and the waiting one
    go on; idle() returns once both are done."""
    admission = Admission(1, max_queue=5, queue_timeout=5)
    await admission.acquire()
    waiting = asyncio.create_task(admission.acquire())
    await asyncio.sleep(0)
    admission.close(ServiceUnavailableError("closing", code="shutting_down"))
    with pytest.raises(ServiceUnavailableError) as refused:
        await admission.acquire()
    assert refused.value.code == "shutting_down"
    idle = asyncio.create_task(admission.idle())
    admission.release()  # the running one ends; the waiting one gets the slot
    await waiting
    assert not idle.done()
    admission.release()
    await asyncio.wait_for(idle, 1)


async def test_refused_waiters_get_the_error_and_hold_no_slot() -> None:
    """refuse_waiting(): every waiting query raises the error; the slot count stays right."""
    admission = Admission(1, max_queue=5, queue_timeout=5)
    await admission.acquire()
    waiters = [asyncio.create_task(admission.acquire()) for _ in range(2)]
    await asyncio.sleep(0)
    admission.refuse_waiting(ServiceUnavailableError("gone", code="shutting_down"))
    for waiter in waiters:
        with pytest.raises(ServiceUnavailableError):
            await waiter
    admission.release()
    assert (admission.in_flight, admission.waiting) == (0, 0)


async def test_high_priority_joins_a_full_batch_before_waiting_low_ones() -> None:
    """The real model, a batch of one: while a long query runs, two `low` queries and then
    one `high` wait; the `high` one is answered before either `low` one."""
    settings = load_settings(api_keys="k", engine={"max_batch": 1})
    engine = await LlamaEngine.load(settings.engine)
    app = create_app(settings, engine)
    finished: list[str] = []
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", headers={"authorization": "Bearer k"}
        ) as client:

            async def ask(name: str, priority: str, max_tokens: int) -> None:
                body = {"prompt": "Tell me a story.", "userId": name, "priority": priority}
                response = await client.post(
                    "/api/v1/query", json=body | {"maxTokens": max_tokens}, timeout=120
                )
                assert response.status_code == 200, response.text
                finished.append(name)

            service = app.state.models.default
            running = asyncio.create_task(ask("running", "normal", 120))
            await until(lambda: service.admission.in_flight == 1)
            waiting = [asyncio.create_task(ask(f"low{i}", "low", 8)) for i in range(2)]
            await until(lambda: service.admission.waiting == 2)
            waiting.append(asyncio.create_task(ask("high", "high", 8)))
            await asyncio.gather(running, *waiting)
    assert finished[:2] == ["running", "high"]
