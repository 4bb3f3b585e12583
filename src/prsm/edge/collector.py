"""Garbage-collector settings for PRSM's long-running servers (`prsm serve`, `prsm gateway`).

A request makes a few hundred short-lived objects, and the processes hold a large heap of
long-lived ones (FastAPI routes, pydantic models, OpenTelemetry, the libraries). With Python's
defaults the young generation is collected every few requests and every full collection
rescans that whole heap: measured on `prsm serve` under wrk, five full collections of ~100 ms
each in 10 s set the p99 at 85 to 120 ms; on the gateway the tail went from 51.7 ms to 9.5 ms
with the settings below (bench/api_throughput.py, bench/gateway_throughput.py).
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 20_000
"""Allocations between young-generation collections (Python's default: 700)."""


def tune_for_requests() -> None:
    """Collect the young generation less often; call once per server process."""
    gc.set_threshold(YOUNG_THRESHOLD, 10, 10)


def freeze_startup_heap() -> None:
    """Move everything start-up made into the permanent generation: it lives as long as the
    process, so no collection needs to scan it again. Call once start-up is done."""
    gc.collect()
    gc.freeze()
