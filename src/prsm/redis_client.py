"""Connecting to Redis: the one place a client is made, for every part of PRSM.

A Redis is named by one URL, whatever the deployment:

- `redis://[[user]:password@]host:port/db`, `rediss://…` (TLS), `unix://…`: one server;
- `redis+sentinel://[[user]:password@]host:port[,host:port…]/master[/db]`, with
  `?sentinel_password=…` (and `sentinel_username=…`) when the sentinels ask for one: a
  Sentinel deployment — the addresses of its sentinels and the name of the master they watch.
  The client asks the sentinels where the master is, and asks again after a failover.

The password in the URL is the data servers'; `redis_password` and `redis_sentinel_password`
(`prsm.config`) join theirs in when the URL names none, so the URL can sit in a file and the
passwords in a secret.

>>> target = parse_sentinel_url("redis+sentinel://:pw@s1:26379,s2:26380/prsm/2")
>>> target.sentinels, target.master, target.db, target.password
((('s1', 26379), ('s2', 26380)), 'prsm', 2, 'pw')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from prsm.errors import ConfigError
from prsm.keys import CONFIRM_MARKER

SENTINEL_SCHEME = "redis+sentinel://"
CONFIRM_SECONDS = 1.0
"""Longest wait for replicas to confirm a write (`run_confirmed`)."""
_TIMEOUTS: dict[str, Any] = {"socket_timeout": 2.0, "socket_connect_timeout": 2.0}
"""Short: a dead Redis must not hold up a publisher or a probe."""


@dataclass(frozen=True)
class SentinelTarget:
    """A Sentinel deployment: where its sentinels are, which master, how to log in."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    """The data servers' (master and replicas)."""
    sentinel_username: str | None = None
    sentinel_password: str | None = None

    def __repr__(self) -> str:
        return (
            f"SentinelTarget(sentinels={self.sentinels!r}, master={self.master!r}, "
            f"db={self.db}, username={self.username!r})"
        )


def is_sentinel_url(url: str) -> bool:
    """Whether `url` names a Sentinel deployment."""
    return url.lower().startswith(SENTINEL_SCHEME)


def parse_sentinel_url(url: str) -> SentinelTarget:
    """The deployment a `redis+sentinel://` URL names; `ConfigError` saying what is wrong."""
    rest = url[len(SENTINEL_SCHEME) :]
    rest, _, query = rest.partition("?")
    location, _, path = rest.partition("/")
    auth, _, hosts = location.rpartition("@")
    names = [part for part in path.split("/") if part]
    if not hosts or not names or len(names) > 2:
        raise ConfigError(
            "a Sentinel URL reads redis+sentinel://[[user]:password@]host:port[,host:port…]"
            f"/master[/db], not {_without_secrets(url)!r}"
        )
    options = {name: values[-1] for name, values in parse_qs(query).items()}
    username, _, password = auth.partition(":") if auth else ("", "", "")
    return SentinelTarget(
        sentinels=tuple(_address(host) for host in hosts.split(",")),
        master=unquote(names[0]),
        db=_number(names[1], "the database") if len(names) == 2 else 0,
        username=unquote(username) or None,
        password=unquote(password) or None,
        sentinel_username=options.get("sentinel_username"),
        sentinel_password=options.get("sentinel_password"),
    )


def connect_redis(url: str) -> aioredis.Redis:
    """A pooled asyncio client of the Redis `url` names; it connects lazily, so a Redis that
    is down does not stop start-up. For a Sentinel deployment, the client of its master: each
    new connection asks the sentinels where the master is now."""
    if not is_sentinel_url(url):
        return aioredis.Redis.from_url(url, **_TIMEOUTS)
    from redis.asyncio.sentinel import Sentinel

    target = parse_sentinel_url(url)
    sentinel_login = {"username": target.sentinel_username, "password": target.sentinel_password}
    sentinel = Sentinel(
        list(target.sentinels),
        sentinel_kwargs={**_TIMEOUTS, **sentinel_login},
        **_data_options(target),
    )
    client: aioredis.Redis = sentinel.master_for(target.master)
    return client


class NotConfirmed(RedisError):
    """The master took the write, but fewer replicas than asked confirmed it in time: a
    failover now could lose it, so it is treated as not done (though it may have been).
    `answer` is what the script answered."""

    def __init__(self, message: str, answer: Any) -> None:
        super().__init__(message)
        self.answer = answer


async def run_confirmed(
    script: AsyncScript, keys: list[Any], args: list[Any], *, replicas: int
) -> Any:
    """`script`'s answer, once `replicas` replicas hold what it wrote: Redis WAIT, which
    confirms the writes of its own connection only, sent in one pipeline with the script.
    `NotConfirmed` when they do not within `CONFIRM_SECONDS`; 0 replicas: the script alone.

    Replication is asynchronous: a write the master acknowledged may be on no replica when it
    fails. Confirmed by one replica, it survives the master's crash (the replica promoted is
    the one furthest along); by every replica, also a manual failover, after which the old
    master and the replica not promoted go on taking and copying writes that the switch then
    discards."""
    if not replicas:
        return await script(keys, args)
    async with script.registered_client.pipeline(transaction=False) as pipe:
        await script(keys, args, pipe)  # type: ignore[arg-type] # redis-py takes a pipeline
        return await _waited(pipe, replicas)


async def confirm_so_far(redis: aioredis.Redis, *, replicas: int) -> None:
    """Return once `replicas` replicas hold every write the master has taken so far (found
    by a read, say, and written by another connection); `NotConfirmed` otherwise. WAIT
    confirms its own connection's writes only, so it follows a marker write, which comes after
    all earlier ones in the replication stream."""
    if not replicas:
        return
    async with redis.pipeline(transaction=False) as pipe:
        pipe.incr(CONFIRM_MARKER)
        await _waited(pipe, replicas)


async def _waited(pipe: Any, replicas: int) -> Any:
    """The answer of the one write queued in `pipe`, sent with a WAIT for `replicas` after it;
    `NotConfirmed` (holding that answer) when fewer confirm within `CONFIRM_SECONDS`."""
    pipe.wait(replicas, round(CONFIRM_SECONDS * 1000))
    answer, confirmed = await pipe.execute()
    if confirmed < replicas:
        raise NotConfirmed(
            f"{confirmed} of {replicas} Redis replicas confirmed the write in time", answer
        )
    return answer


def _data_options(target: SentinelTarget) -> dict[str, Any]:
    return {"db": target.db, "username": target.username, "password": target.password,
            **_TIMEOUTS}  # fmt: skip


def _address(host: str) -> tuple[str, int]:
    name, _, port = host.strip().rpartition(":")
    if not name:
        raise ConfigError(f"a sentinel's address is host:port, not {host!r}")
    return name.strip("[]"), _number(port, f"the port of {name}")


def _number(text: str, what: str) -> int:
    if not text.isdigit():
        raise ConfigError(f"{what} must be a number, not {text!r}")
    return int(text)


def _without_secrets(url: str) -> str:
    """`url` with its user info and query left out, for an error message."""
    rest = url[len(SENTINEL_SCHEME) :].partition("?")[0]
    return SENTINEL_SCHEME + rest.rpartition("@")[2]
