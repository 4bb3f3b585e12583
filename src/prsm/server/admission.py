"""Admission to the engine: bounded concurrency and a bounded, prioritised wait queue.

At most `concurrency` queries generate at once. Up to `max_queue` more wait, `high` priority
first, then in arrival order; a query that finds the queue full, or waits longer than
`queue_timeout`, is refused with 503 and `Retry-After` instead of piling up latency.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from prsm.contracts import Priority
from prsm.errors import ServiceUnavailableError

_RANK: dict[Priority, int] = {"high": 0, "normal": 1, "low": 2}


@dataclass(order=True)
class _Waiter:
    rank: int
    seq: int
    future: asyncio.Future[None] = field(compare=False)


class Admission:
    """`async with admission.slot(priority): ...` runs the body with one engine slot held."""

    def __init__(
        self,
        concurrency: int,
        *,
        max_queue: int,
        queue_timeout: float,
        retry_after: int = 1,
    ) -> None:
        self.concurrency = concurrency
        self.max_queue = max_queue
        self.queue_timeout = queue_timeout
        self.retry_after = retry_after
        self._free = concurrency
        self._waiters: list[_Waiter] = []
        self._seq = itertools.count()
        self._closed: ServiceUnavailableError | None = None
        self._idle: asyncio.Event | None = None

    @property
    def in_flight(self) -> int:
        """Queries generating now."""
        return self.concurrency - self._free

    @property
    def waiting(self) -> int:
        """Queries waiting for a slot now."""
        return len(self._waiters)

    @asynccontextmanager
    async def slot(self, priority: Priority = "normal") -> AsyncIterator[None]:
        """Hold a generating slot for the block, waiting in priority order; 503 `saturated` when
        the queue is full or the wait too long."""
        await self.acquire(priority)
        try:
            yield
        finally:
            self.release()

    async def acquire(self, priority: Priority = "normal") -> None:
        """Wait for a slot, or raise `ServiceUnavailableError` (503: `saturated`, or the
        error given to `close`)."""
        if self._closed is not None:
            raise self._closed
        if self._free > 0 and not self.waiting:
            self._free -= 1
            return
        if self.waiting >= self.max_queue:
            raise ServiceUnavailableError(
                f"the engine is saturated: {self.in_flight} queries running and "
                f"{self.waiting} waiting; retry later",
                code="saturated",
                retry_after=self.retry_after,
                not_run=True,
            )
        future = asyncio.get_running_loop().create_future()
        waiter = _Waiter(_RANK[priority], next(self._seq), future)
        heapq.heappush(self._waiters, waiter)
        # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancellation that
        # arrives in the same tick as the slot.
        try:
            async with asyncio.timeout(self.queue_timeout):
                await asyncio.shield(waiter.future)
        except TimeoutError:
            if self._abandon(waiter):
                raise ServiceUnavailableError(
                    f"waited {self.queue_timeout:g}s for the engine; retry later",
                    code="saturated",
                    retry_after=self.retry_after,
                    not_run=True,
                ) from None
            waiter.future.result()  # refused meanwhile (refuse_waiting): raise that
        except asyncio.CancelledError:
            if not self._abandon(waiter) and waiter.future.exception() is None:
                self.release()  # the slot was handed over as we were cancelled: pass it on
            raise

    def _abandon(self, waiter: _Waiter) -> bool:
        """Withdraw a waiter; False when it had already been handed a slot."""
        if waiter.future.done():
            return False
        waiter.future.cancel()
        self._waiters.remove(waiter)
        heapq.heapify(self._waiters)
        return True

    def release(self) -> None:
        """Give back a slot taken by `acquire`."""
        if self._waiters:  # hand the slot straight to the next waiter
            heapq.heappop(self._waiters).future.set_result(None)
        else:
            self._free += 1
            if self._idle is not None and self._free == self.concurrency:
                self._idle.set()

    def close(self, error: ServiceUnavailableError) -> None:
        """Refuse every later `acquire` with `error`; queries running or waiting go on."""
        self._closed = error

    def refuse_waiting(self, error: ServiceUnavailableError) -> None:
        """Answer every query still waiting with `error` (a drain that ran out of time)."""
        while self._waiters:
            waiter = heapq.heappop(self._waiters)
            if not waiter.future.done():
                waiter.future.set_exception(error)

    async def idle(self) -> None:
        """Return once no query is running or waiting."""
        if self.in_flight == 0 and not self.waiting:
            return
        self._idle = asyncio.Event()
        await self._idle.wait()
