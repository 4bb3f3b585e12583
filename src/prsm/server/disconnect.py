"""Stop work whose caller has gone: the API's generation, the gateway's upstream request.

Once a request's body has been read, the next ASGI `receive()` returns only when the client
disconnects (or the response is complete). `until_disconnected` races the work against it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from typing import Any, TypeVar

T = TypeVar("T")
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]

CLIENT_GONE = 499
"""The status recorded for requests whose caller disconnected first (nginx's code)."""


class ClientGone(Exception):
    """The caller disconnected before the answer was complete; the work was cancelled."""


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def until_disconnected(work: Coroutine[Any, Any, T], receive: Receive) -> T:
    """`work`'s result, unless the client disconnects first: then `work` is cancelled, waited
    for (so what it holds is given back), and `ClientGone` raised. Call it only once the
    request body has been read."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        watcher.cancel()
        await _cancel(task)
        raise
    watcher.cancel()
    if task.done():
        return task.result()
    await _cancel(task)
    raise ClientGone()


async def _cancel(task: asyncio.Future[Any]) -> None:
    """Cancel `task` and wait until it has let go of what it held; its outcome no longer
    matters (an error it raised meanwhile is read, so that asyncio does not report it)."""
    task.cancel()
    await asyncio.wait((task,))
    if not task.cancelled():
        task.exception()
