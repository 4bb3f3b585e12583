"""The reference worker for bench/jobs_throughput.py: bare SAQ running a no-op job."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from saq import Queue, Worker
from saq.types import Context

CONCURRENCY = 5  # as PRSM's priority-query queue


async def noop(ctx: Context, **kwargs: Any) -> dict[str, Any]:
    return {"ok": True}


async def main(url: str, name: str) -> None:
    worker = Worker(Queue.from_url(url, name=name), functions=[noop], concurrency=CONCURRENCY)
    await worker.start()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
