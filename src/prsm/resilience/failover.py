"""Failover: one request tried on different instances, as `prsm.resilience.outcomes` allows
(go-kit's `Retry` over a balancer).

`failover(picker, endpoint, ...)` is itself a handler. `picker.pick(exclude)` is the balancer
(a `prsm.sd.pool.Pool`: discovery, ejection, balancing); `endpoint(instance)` is the handler
that sends to one instance (through its breaker, its timeout, the transport). A failure the
classifier calls the target's goes to another instance at once; a 429 waits for its
`Retry-After` and tries again (the caller's budget, not the instance's fault); anything else,
or the last attempt's failure, is raised.

>>> ask = failover(pool, lambda instance: send_to(instance), attempts=3)   # doctest: +SKIP
>>> response = await ask(request)                                       # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from typing import Any, Protocol, TypeVar

from prsm.errors import ConnectError, HTTPStatusError
from prsm.resilience.handler import Handler, Req, Resp
from prsm.resilience.outcomes import Outcome, classify, fails_over

SLOW_DOWN_WAIT = 1.0
"""Seconds to wait after a 429 that came without Retry-After."""


class Target(Protocol):
    """What failover needs of an instance: an id to leave it out by."""

    @property
    def id(self) -> str:
        """The instance's id: the same instance always has the same one."""


I = TypeVar("I", bound=Target)  # noqa: E741
I_co = TypeVar("I_co", bound=Target, covariant=True)


class Picker(Protocol[I_co]):
    """Chooses an instance not in `exclude`, or None when there is none left."""

    def pick(self, exclude: Collection[str] = (), hint: Any = None) -> I_co | None:
        """An instance not in `exclude`, or None when there is none; `hint` is what the
        request offers the balancer (`failover`'s `hint`)."""


TryHook = Callable[[I, BaseException | None], None]
"""Called after each try with the instance and its error (None: it answered)."""


def failover(
    picker: Picker[I],
    endpoint: Callable[[I], Handler[Req, Resp]],
    *,
    attempts: int,
    idempotent: Callable[[Req], bool] | bool = False,
    allowed: Callable[[BaseException], bool] | None = None,
    on_try: TryHook[I] | None = None,
    hint: Callable[[Req], Any] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    service: str = "the service",
) -> Handler[Req, Resp]:
    """A handler trying up to `attempts` instances for each request.

    `idempotent` says whether a request may be sent twice (a flag, or decided per request);
    `allowed` may narrow what the classifier allows (the gateway's per-route `retry_on`),
    never widen it; `hint(request)` is given to each pick (a prompt to route by)."""

    notify: TryHook[I] = on_try or _unobserved

    async def handle(request: Req) -> Resp:
        may_resend = idempotent(request) if callable(idempotent) else idempotent
        offered = hint(request) if hint is not None else None
        tried: set[str] = set()
        last: BaseException | None = None
        for attempt in range(1, attempts + 1):
            instance = picker.pick(tried, offered)
            if instance is None:
                break
            tried.add(instance.id)
            try:
                response = await endpoint(instance)(request)
            except Exception as exc:
                notify(instance, exc)
                if attempt == attempts or not _goes_on(exc, may_resend, allowed):
                    raise
                if classify(exc) is Outcome.SLOW_DOWN:  # the caller's budget, not the instance
                    tried.discard(instance.id)
                    await sleep(_retry_after(exc))
                last = exc
                continue
            notify(instance, None)
            return response
        if last is not None:
            raise last
        raise ConnectError(f"no instance of {service} to call")

    return handle


def _goes_on(
    exc: BaseException, may_resend: bool, allowed: Callable[[BaseException], bool] | None
) -> bool:
    """Whether the request goes on after `exc`: to another instance, or after a 429's wait."""
    if allowed is not None and not allowed(exc):
        return False
    outcome = classify(exc)
    return outcome is Outcome.SLOW_DOWN or fails_over(outcome, idempotent=may_resend)


def _unobserved(instance: object, exc: BaseException | None) -> None:
    """No `on_try` hook."""


def _retry_after(exc: BaseException) -> float:
    retry_after = exc.retry_after if isinstance(exc, HTTPStatusError) else None
    return SLOW_DOWN_WAIT if retry_after is None else retry_after
