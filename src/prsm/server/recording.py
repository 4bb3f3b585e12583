"""Recording a query once it has ended, however it ended: its event (`completed` or `failed`,
with the request that failed), its metrics and its log line."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prsm import errors, metrics, tracing
from prsm.contracts import Usage
from prsm.edge.disconnect import CLIENT_GONE
from prsm.edge.errors import as_http_error
from prsm.engines import Generation
from prsm.errors import HTTPStatusError
from prsm.events import EventSink, QueryEvent
from prsm.events.schema import EventError
from prsm.server.auth import Principal

if TYPE_CHECKING:
    from prsm.server.service import Ask

log = logging.getLogger("prsm.query")


@dataclass(slots=True)
class Outcome:
    """How one query is going: filled in as it runs, recorded when it ends."""

    started: float
    model: str
    admitted: bool = False
    """Whether it got an engine slot (a refused or queued-out query never reached the engine)."""
    generation: Generation | None = None
    failure: HTTPStatusError | None = None
    from_cache: bool = False
    """Answered from the response cache: nothing was generated, no tokens spent."""


class Recorder:
    """Records the queries of one service: to `events` (when there is a sink), the metrics
    and the log."""

    def __init__(self, events: EventSink | None, service: str, instance: str) -> None:
        self._events = events
        self._service = service
        self._instance = instance

    @asynccontextmanager
    async def recorded(
        self, ask: Ask, principal: Principal, cid: str, model: str
    ) -> AsyncIterator[Outcome]:
        """How the query ended, recorded once it has: its event, metrics and log line
        (`model`: the model's name as far as it is known)."""
        outcome = Outcome(started=time.perf_counter(), model=model)
        try:
            yield outcome
        except Exception as exc:
            outcome.failure = as_http_error(exc)
            raise
        except asyncio.CancelledError:  # the caller went away, or the server is stopping
            outcome.failure = HTTPStatusError(
                "the query was cancelled before its answer was complete",
                status_code=CLIENT_GONE,
                code="cancelled",
            )
            raise
        finally:
            self._record(ask, principal, cid, outcome)

    def _record(self, ask: Ask, principal: Principal, cid: str, outcome: Outcome) -> None:
        duration = time.perf_counter() - outcome.started
        generation, failure = outcome.generation, outcome.failure
        status = "200" if generation is not None else "500"
        if failure is not None:
            status = str(failure.status_code)
        tokens = generation.total_tokens if generation is not None and not outcome.from_cache else 0
        if self._events is not None:
            caller = principal.account.key_id
            self._events.emit(
                self._event(ask, caller, cid, duration, generation, failure, outcome.model)
            )
        metrics.record_query(
            service=self._service,
            method=ask.operation,
            status=status,
            user_tier=principal.tier,
            duration=duration,
            tokens=tokens,
            model=outcome.model,
        )
        log.info(
            "query %s",
            "answered" if status == "200" else "failed",
            extra={
                "userId": ask.user_id,
                "keyId": principal.key_id,
                "accountKeyId": principal.account.key_id,
                "status": int(status),
                "priority": ask.priority,
                "promptChars": ask.prompt_chars,
                "tokens": tokens,
                "admitted": outcome.admitted,
                "latencyMs": round(duration * 1000, 2),
            },
        )

    def _event(
        self,
        ask: Ask,
        caller: str,
        cid: str,
        duration: float,
        generation: Generation | None,
        failure: HTTPStatusError | None,
        model: str,
    ) -> QueryEvent:
        common: dict[str, Any] = {
            "correlation_id": cid,
            "user_id": ask.user_id,
            "caller_id": caller,
            "latency_ms": round(duration * 1000, 2),
            "priority": ask.priority,
            "context": ask.context,
            "service": self._service,
            "instance": self._instance,
            "trace_id": tracing.current_trace_id(),
        }
        if generation is not None:
            return QueryEvent(
                type="completed",
                usage=usage_of(generation),
                model=generation.model,
                confidence=generation.confidence,
                **common,
            )
        error = failure or errors.ServerError("the query failed")
        return QueryEvent(
            type="failed",
            model=model,
            error=EventError(code=error.code, message=error.message, status=error.status_code),
            request=ask.wire,
            **common,
        )


def usage_of(generation: Generation) -> Usage:
    """A generation's tokens, as PRSM's contracts count them."""
    return Usage(
        tokens=generation.total_tokens,
        prompt_tokens=generation.prompt_tokens,
        completion_tokens=generation.completion_tokens,
    )
