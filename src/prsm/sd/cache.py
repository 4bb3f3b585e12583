"""The current instance set of a service, refreshed in the background (go-kit's Endpointer).

A failing discovery source does not empty the set: the last good answer is kept, and the
failure is logged and counted, until the source answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from prometheus_client import Counter

from prsm.errors import ConnectError
from prsm.sd.base import Discovery, Instance

log = logging.getLogger("prsm.discovery")

REFRESH_FAILURES = Counter(
    "prsm_discovery_failures_total", "Discovery refreshes that failed", ("service",)
)


class InstanceCache:
    """A service's instances as last discovered, refreshed in the background; the last good set
    is kept when discovery fails or answers nothing (go-kit's Endpointer)."""

    def __init__(self, service: str, discovery: Discovery, *, refresh_seconds: float = 30.0):
        self.service = service
        self._discovery = discovery
        self._refresh_seconds = refresh_seconds
        self._instances: list[Instance] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def instances(self) -> list[Instance]:
        """The last good set of instances."""
        return self._instances

    async def refresh(self) -> bool:
        """Ask the source once; keep the last good set if it fails or answers nothing.
        True when the source answered."""
        try:
            found = await self._discovery.fetch()
        except Exception as exc:
            REFRESH_FAILURES.labels(self.service).inc()
            log.warning(
                "discovery failed; keeping the last good instances",
                extra={"service": self.service, "error": str(exc), "kept": len(self._instances)},
            )
            return False
        if not found and self._instances:
            log.warning("discovery found no instances; keeping the last good ones")
            return True
        self._instances = found
        return True

    async def start(self) -> None:
        """Load the set (ConnectError if there is none) and keep it fresh in the background."""
        await self.refresh()
        if not self._instances:
            raise ConnectError(f"no instances of {self.service!r} found")
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"discovery-{self.service}")

    async def _run(self) -> None:
        # A blocking source (Consul) long-polls: ask again at once, sleeping only after errors.
        blocking = getattr(self._discovery, "blocking", False)
        while True:
            if not blocking:
                await asyncio.sleep(self._refresh_seconds)
            if not await self.refresh() and blocking:
                await asyncio.sleep(min(self._refresh_seconds, 5.0))

    async def aclose(self) -> None:
        """Stop refreshing and close the discovery source."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        close = getattr(self._discovery, "aclose", None)
        if close is not None:
            await close()
