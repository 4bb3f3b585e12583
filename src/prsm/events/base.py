"""Where query events go: one small protocol, a Redis implementation and an in-memory one."""

from __future__ import annotations

from typing import Protocol

from prsm.events.schema import QueryEvent


class EventSink(Protocol):
    """Takes events from the query path. `emit` never blocks and never raises."""

    def emit(self, event: QueryEvent) -> None:
        """Queue an event for publishing; never blocks, never raises."""

    async def start(self) -> None:
        """Start publishing in the background."""

    async def aclose(self) -> None:
        """Publish what is buffered, then stop."""


class MemoryEventSink:
    """Keeps events in a list: for tests of code that emits them."""

    def __init__(self) -> None:
        self.events: list[QueryEvent] = []

    def emit(self, event: QueryEvent) -> None:
        """Keep the event in `events`."""
        self.events.append(event)

    async def start(self) -> None:
        """Nothing to start."""

    async def aclose(self) -> None:
        """Nothing to stop."""
