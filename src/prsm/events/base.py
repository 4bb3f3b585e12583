"""Where query events go: one small protocol, a Redis implementation and an in-memory one."""

from __future__ import annotations

from typing import Protocol

from prsm.events.schema import QueryEvent


class EventSink(Protocol):
    """Takes events from the query path. `emit` never blocks and never raises."""

    def emit(self, event: QueryEvent) -> None: ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...


class MemoryEventSink:
    """Keeps events in a list: for tests of code that emits them."""

    def __init__(self) -> None:
        self.events: list[QueryEvent] = []

    def emit(self, event: QueryEvent) -> None:
        self.events.append(event)

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
