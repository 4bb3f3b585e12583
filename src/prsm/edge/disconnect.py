"""Stop work whose caller has gone: the API's generation, the gateway's upstream request.

Under PRSM's own HTTP protocol (`prsm.edge.protocol`) the connection tells the request
directly when it is lost: the scope carries a `DisconnectHook` (extension `prsm.disconnect`),
which costs nothing per request. Under any other server (or an in-process test client) a
watcher task waits for ASGI's `http.disconnect` instead: once a request's body has been read,
the next `receive()` returns only when the client disconnects or the response is complete.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from typing import Any, TypeVar

T = TypeVar("T")
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]

CLIENT_GONE = 499
"""The status recorded for requests whose caller disconnected first (nginx's code)."""


class ClientGone(Exception):
    """The caller disconnected before the answer was complete; the work was cancelled."""


EXTENSION = "prsm.disconnect"


class DisconnectHook:
    """Set by the HTTP protocol in `scope["extensions"]`; `fire()` when the connection is
    lost before the response is complete."""

    __slots__ = ("callback",)

    def __init__(self) -> None:
        self.callback: Callable[[], None] | None = None

    def fire(self) -> None:
        """Signal that the caller went away."""
        if self.callback is not None:
            self.callback()


class _Watch:
    """What the watcher and the request's task share."""

    __slots__ = ("done", "gone")

    def __init__(self) -> None:
        self.done = False
        self.gone = False


async def _watch(receive: Receive, request: asyncio.Task[Any], watch: _Watch) -> None:
    try:
        while (await receive())["type"] != "http.disconnect":
            pass
    except Exception:  # the connection's end is all this waits for
        return
    _gone(request, watch)


def _gone(request: asyncio.Task[Any], watch: _Watch) -> None:
    if not watch.done:
        watch.gone = True
        request.cancel()


async def until_disconnected(
    work: Coroutine[Any, Any, T], receive: Receive, scope: MutableMapping[str, Any]
) -> T:
    """`work`'s result, unless the client disconnects first: then `work` is cancelled (its own
    clean-up runs, so what it holds is given back) and `ClientGone` raised. Call it only once
    the request body has been read.

    `work` runs in the caller's task, which is cancelled if the connection ends before `work`
    has finished. The fallback watcher task is never cancelled: when `work` finishes first it
    ends by itself once the response is complete, which keeps a request's garbage low.
    """
    request = asyncio.current_task()
    assert request is not None, "until_disconnected runs inside a task"
    watch = _Watch()
    hook = scope.get("extensions", {}).get(EXTENSION)
    if isinstance(hook, DisconnectHook):
        hook.callback = functools.partial(_gone, request, watch)
    else:
        # Not kept here: a reference from `watch` would make a cycle for the collector. While
        # it waits, the connection's event holds it.
        asyncio.get_running_loop().create_task(_watch(receive, request, watch))
    try:
        return await work
    except asyncio.CancelledError:
        if watch.gone and request.uncancel() == 0:
            raise ClientGone() from None
        raise
    finally:
        watch.done = True
        if isinstance(hook, DisconnectHook):
            hook.callback = None  # it holds this task, which holds the scope: break the cycle
