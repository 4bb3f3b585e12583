"""Callback signing, verification, the allow-list and delivery, over real loopback HTTP."""

from __future__ import annotations

import json

import pytest

from prsm.config import JobSettings
from prsm.jobs.callbacks import (
    CallbackNotAllowedError,
    CallbackSender,
    canonical_callback_url,
    check_target,
    parse_networks,
    sign,
    verify_signature,
)
from tests.support import Reply, free_port, scripted_server

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


@pytest.mark.parametrize(
    "url",
    [
        "http://127.1:9/",
        "http://2130706433:9/",
        "http://0x7f.0.0.1:9/",
        "http://0x7f000001:9/",
        "http://0X7F000001:9/",
        "http://example.0x10:9/",
        "http://0177.0.0.1:9/",
        "http://169.254.169.254\\@127.0.0.1:9/",
        "http://evil@127.0.0.1:9/",
        "http://user:pass@127.0.0.1:9/",
        "http://127.0.0.1:99999/",
        "http://[::1/",
        "http://exa mple.com/",
        "ftp://127.0.0.1/",
        "http:///path",
        "http://010.0.0.1/",
    ],
)
def test_odd_callback_urls_are_refused(url: str) -> None:
    """Host spellings that clients and resolvers read differently, user info, bad ports and
    other schemes are refused, whatever they would resolve to."""
    with pytest.raises(CallbackNotAllowedError):
        canonical_callback_url(url)


@pytest.mark.parametrize(
    ("url", "canonical"),
    [
        ("HTTP://LocalHost:8080/hook?a=1#x", "http://localhost:8080/hook?a=1"),
        ("http://127.0.0.1", "http://127.0.0.1/"),
        ("https://[0:0:0:0:0:0:0:1]:9000/cb", "https://[::1]:9000/cb"),
        ("http://hooks.example.com./x", "http://hooks.example.com/x"),
    ],
)
def test_callback_urls_have_one_canonical_form(url: str, canonical: str) -> None:
    """What is checked is what is called: one spelling per target."""
    assert canonical_callback_url(url) == canonical


async def test_ipv4_mapped_ipv6_is_checked_as_the_ipv4_it_carries() -> None:
    """[::ffff:10.0.0.1] is 10.0.0.1: outside the loopback allow-list, refused;
    [::ffff:127.0.0.1] is allowed."""
    networks = parse_networks(["127.0.0.0/8", "::1/128"])
    with pytest.raises(CallbackNotAllowedError):
        await check_target("http://[::ffff:10.0.0.1]:9/", networks)
    assert await check_target("http://[::ffff:127.0.0.1]:9/", networks) == (
        "http://[::ffff:7f00:1]:9/"
    )


async def test_undeliverable_callbacks_never_raise() -> None:
    """A callback already queued with a URL the client cannot use (made before URLs were
    checked this way), or to a closed port, is given up and reported, never raised: raising
    would fail the job and run its query again."""
    networks = parse_networks(["127.0.0.0/8"])
    async with CallbackSender(b"s", networks, attempts=2, backoff=0.01) as sender:
        for url in ("http://127.1:9/", f"http://127.0.0.1:{free_port()}/"):
            assert await sender.send(url, {"x": 1}, job_id="j", correlation_id=None) is False


async def test_by_default_no_callback_target_is_allowed_not_even_loopback() -> None:
    """With `jobs.callback_allow` unset, a callback to this machine's own ports (in a pod:
    every sidecar's admin port) is refused, saying which setting would allow it."""
    default = parse_networks(JobSettings().callback_allow)
    with pytest.raises(CallbackNotAllowedError, match=r"jobs\.callback_allow"):
        await check_target("http://127.0.0.1:9090/metrics", default)
