"""Query events on Redis: pub/sub for the specification's consumers, a stream for durable ones."""

from prsm.events.base import EventSink, MemoryEventSink
from prsm.events.schema import QueryEvent
from prsm.events.stream import EventStreamConsumer, StreamEvent

__all__ = ["EventSink", "EventStreamConsumer", "MemoryEventSink", "QueryEvent", "StreamEvent"]
