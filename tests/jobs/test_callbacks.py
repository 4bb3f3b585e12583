"""Callback signing, verification, the allow-list and delivery, over real loopback HTTP."""

from __future__ import annotations

import json

import pytest

from prsm.jobs.callbacks import (
    CallbackNotAllowedError,
    CallbackSender,
    check_target,
    parse_networks,
    sign,
    verify_signature,
)
from tests.support import Reply, scripted_server

SECRET = b"s3cret"
LOOPBACK = parse_networks(["127.0.0.0/8", "::1/128"])


def test_signature_round_trip_and_tampering() -> None:
    """A signature verifies; a changed body, secret or old timestamp does not."""
    body = b'{"requestId": "r1"}'
    signature = sign(SECRET, 1_000_000, body)
    assert signature.startswith("v1=")
    assert verify_signature(SECRET, body, "1000000", signature, now=1_000_010)
    assert not verify_signature(SECRET, body + b" ", "1000000", signature, now=1_000_010)
    assert not verify_signature(b"other", body, "1000000", signature, now=1_000_010)
    assert not verify_signature(SECRET, body, "1000000", signature, now=1_000_000 + 301)
    assert not verify_signature(SECRET, body, None, signature, now=1_000_000)
    assert not verify_signature(SECRET, body, "soon", signature, now=1_000_000)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9/hook", "http://localhost:9/x", "https://[::1]/"]
)
async def test_loopback_targets_are_allowed(url: str) -> None:
    """Loopback names and addresses pass the default allow-list."""
    await check_target(url, LOOPBACK)


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://192.168.1.1/",
        "ftp://127.0.0.1/file",
        "not a url",
        "http://host.invalid/",
    ],
)
async def test_other_targets_are_refused(url: str) -> None:
    """Private, link-local (cloud metadata), non-HTTP and unresolvable targets are refused."""
    with pytest.raises(CallbackNotAllowedError):
        await check_target(url, LOOPBACK)


async def test_delivered_callback_is_signed_and_carries_ids() -> None:
    """The receiver gets the JSON body with a valid signature, job id and correlation id."""
    with scripted_server(Reply(200)) as receiver:
        async with CallbackSender(SECRET, LOOPBACK) as sender:
            delivered = await sender.send(
                receiver.base_url + "/hook",
                {"requestId": "r1", "status": "completed"},
                job_id="job-1",
                correlation_id="cid-1",
            )
    assert delivered
    (path, headers), body = receiver.requests[0], receiver.bodies[0]
    assert path == "/hook"
    assert json.loads(body) == {"requestId": "r1", "status": "completed"}
    assert verify_signature(SECRET, body, headers["X-PRSM-Timestamp"], headers["X-PRSM-Signature"])
    assert headers["X-PRSM-Job-ID"] == "job-1"
    assert headers["X-Correlation-ID"] == "cid-1"


async def test_delivery_is_retried_on_5xx_and_429() -> None:
    """503 then 429 then 200: three attempts, delivered."""
    with scripted_server(Reply(503), Reply(429), Reply(200)) as receiver:
        async with CallbackSender(SECRET, LOOPBACK, backoff=0.01) as sender:
            assert await sender.send(receiver.base_url, {"a": 1}, job_id="j", correlation_id=None)
    assert len(receiver.requests) == 3


async def test_client_error_is_not_retried_and_redirects_not_followed() -> None:
    """400 is final after one attempt; a 302 is not followed (it could point anywhere)."""
    for reply in (Reply(400), Reply(302, headers={"location": "http://10.0.0.1/"})):
        with scripted_server(reply) as receiver:
            async with CallbackSender(SECRET, LOOPBACK, backoff=0.01) as sender:
                assert not await sender.send(receiver.base_url, {}, job_id="j", correlation_id=None)
        assert len(receiver.requests) == 1


async def test_disallowed_target_is_never_contacted() -> None:
    """With loopback not allowed, a loopback receiver gets no request at all."""
    with scripted_server(Reply(200)) as receiver:
        async with CallbackSender(SECRET, parse_networks(["10.0.0.0/8"])) as sender:
            assert not await sender.send(receiver.base_url, {}, job_id="j", correlation_id=None)
    assert receiver.requests == []


async def test_unreachable_receiver_gives_up_after_the_attempts() -> None:
    """Nothing listening: the sender tries `attempts` times and reports failure."""
    from tests.support import free_port

    async with CallbackSender(SECRET, LOOPBACK, attempts=2, backoff=0.01) as sender:
        assert not await sender.send(
            f"http://127.0.0.1:{free_port()}/", {}, job_id="j", correlation_id=None
        )
