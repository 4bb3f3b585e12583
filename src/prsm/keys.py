"""Every Redis key, channel and stream name PRSM uses, defined once.

The channel names and the user metrics hash are the specification's wire contract: its Node
`PRSMEventHandler` subscribes to them unchanged.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import Literal

EventType = Literal["completed", "failed"]
JobType = Literal["priority-query", "batch-query", "scheduled-query"]
JOB_TYPES: tuple[JobType, ...] = ("priority-query", "batch-query", "scheduled-query")

QUERY_COMPLETED = "prsm:query:completed"
QUERY_FAILED = "prsm:query:failed"
FALLBACK_REQUEST = "fallback:ai:request"
EVENT_STREAM = "prsm:events"
"""Capped stream holding every event, for consumer groups (at-least-once delivery)."""
RATE_LIMIT_PREFIX = "prsm:ratelimit"
"""The gateway's shared rate-limit windows (the `limits` library adds the rest of each key)."""
CONFIRM_MARKER = "prsm:confirm"
"""Written before a Redis WAIT that must confirm every earlier write (`prsm.redis_client`)."""


def query_channel(event_type: EventType) -> str:
    """`prsm:query:completed` or `prsm:query:failed`."""
    return f"prsm:query:{event_type}"


def user_metrics(caller_id: str, user_id: str) -> str:
    """Hash of `total_queries` and `total_tokens` for one user of one caller (24 h expiry).

    The specification's key is `user:{userId}:metrics`; `userId` is the caller's word, so
    the key holds the caller's tag too: no caller can raise another's users' counts."""
    return f"user:{owner_tag(caller_id)}:{user_id}:metrics"


@functools.lru_cache(maxsize=4096)  # a few callers, asked for on every query and job
def owner_tag(identity: str) -> str:
    """The short, non-secret tag that marks a job or batch as `identity`'s own."""
    return hashlib.sha256(f"prsm-owner\x00{identity}".encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Account:
    """Whose budget a query is charged to and whose cached answers it may read."""

    key_id: str
    """How `budgets.callers` names the account: the caller's key id or `jwt:<subject>`."""
    tag: str
    """The account's owner tag (`prsm.keys.owner_tag` of its identity)."""


def batch_results(owner: str, batch_id: str) -> str:
    """JSON list of one batch job's per-query results (1 h expiry), under its owner's tag.

    The specification's key is `batch:{batchId}:results`; with the owner in it, two callers
    choosing the same batch id neither collide nor read each other's answers."""
    return f"batch:{owner}:{batch_id}:results"


def stored_response(owner: str, response_id: str) -> str:
    """One stored Responses API response and the conversation up to it, under its owner's tag
    (`responses.ttl_seconds` expiry): only its creator can read or continue it."""
    return f"prsm:response:{owner}:{response_id}"


def budget_window(owner: str, counter: str, window: int) -> str:
    """One caller's count of tokens or requests in one budget window (numbered from the
    epoch), under its owner's tag; it expires one window after its own ends."""
    return f"prsm:budget:{owner}:{counter}:{window}"


def job_queue(job_type: JobType) -> str:
    """The SAQ queue of one job type (its keys are `saq:<name>:*`)."""
    return f"prsm-{job_type}"
