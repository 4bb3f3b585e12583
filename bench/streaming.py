"""Streaming, in one run: time to first token and the added cost of streaming beside a plain
query (same prompt, same tokens, the embedded model); and the gateway relaying server-sent
events beside nginx relaying the same stream.

Part 1: `prsm serve` with the embedded model; greedy, 64 tokens; the same query plain and
with `"stream": true`, alternating, `--runs` times each: the median time to the first `delta`
and the median total of each. Part 2: nginx serves a stream of `--events` small events from a
file (the upstream); the client reads it through nginx (`proxy_buffering off`) and through
`prsm gateway`; events per second received. Needs `nginx` (Debian: apt-get install nginx).

    .venv/bin/python bench/streaming.py [--runs 7] [--events 20000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from _harness import API_KEY, free_port, prsm_serve, run_nginx, run_server

QUERY = {"prompt": "Tell me about the city of Paris.", "userId": "bench", "maxTokens": 64}
HEADERS = {"Authorization": f"Bearer {API_KEY}"}
SERVERS = """
    server {{
        listen 127.0.0.1:{upstream_port};
        location /v1/ {{ default_type text/event-stream; alias {{dir}}/; }}
    }}
    server {{
        listen 127.0.0.1:{proxy_port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream_port};
            proxy_http_version 1.1;
            proxy_buffering off;
        }}
    }}
"""


def timed_query(base: str, stream: bool) -> tuple[float, float, int]:
    """(seconds to the first text, seconds in all, completion tokens) of one query."""
    started = time.perf_counter()
    first = 0.0
    if not stream:
        body = httpx.post(base + "/api/v1/query", json=QUERY, headers=HEADERS, timeout=120).json()
        total = time.perf_counter() - started
        return total, total, body["data"]["usage"]["completionTokens"]
    with httpx.stream(
        "POST", base + "/api/v1/query", json=QUERY | {"stream": True}, headers=HEADERS,
        timeout=120,
    ) as response:  # fmt: skip
        done = {}
        for line in response.iter_lines():
            if line.startswith("event: delta") and not first:
                first = time.perf_counter() - started
            elif line.startswith("data:") and '"usage"' in line:
                done = json.loads(line.removeprefix("data:"))
    return first, time.perf_counter() - started, done["data"]["usage"]["completionTokens"]


def model_part(runs: int) -> None:
    plain: list[float] = []
    streamed: list[tuple[float, float]] = []
    with prsm_serve({"PRSM_ENGINE__TEMPERATURE": "0"}) as base:
        timed_query(base, False)  # warm-up
        for _ in range(runs):
            _, total, plain_tokens = timed_query(base, False)
            plain.append(total)
            first, total, tokens = timed_query(base, True)
            assert tokens == plain_tokens, (tokens, plain_tokens)
            streamed.append((first, total))
    first = statistics.median(f for f, _ in streamed)
    stream_total = statistics.median(t for _, t in streamed)
    plain_total = statistics.median(plain)
    print(f"embedded model, {plain_tokens} tokens, {runs} runs each (medians):")
    print(f"  plain query             : {plain_total * 1000:7.1f} ms")
    print(f"  streamed, first delta   : {first * 1000:7.1f} ms")
    print(f"  streamed, whole answer  : {stream_total * 1000:7.1f} ms")
    print(f"  streaming / plain       : {stream_total / plain_total:.3f}")


@contextlib.contextmanager
def nginx(events: int) -> Iterator[tuple[str, str]]:
    """nginx serving a file of `events` stream chunks, and proxying it without buffering."""
    upstream_port, proxy_port = free_port(), free_port()
    servers = SERVERS.format(upstream_port=upstream_port, proxy_port=proxy_port)
    chunk = {"object": "chat.completion.chunk", "choices": [{"delta": {"content": " word"}}]}
    line = f"data: {json.dumps(chunk)}\n\n"
    stream = {"stream": line * events + "data: [DONE]\n\n"}
    with run_nginx(servers, "/v1/stream", upstream_port, stream):
        yield f"http://127.0.0.1:{upstream_port}", f"http://127.0.0.1:{proxy_port}"


def events_per_second(url: str, repeats: int) -> float:
    """Events received per second reading `url` to its end, best of `repeats`."""
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        received = 0
        with httpx.stream("GET", url, timeout=60) as response:
            for text in response.iter_text():
                received += text.count("\n\n")
        best = max(best, received / (time.perf_counter() - started))
    return best


def relay_part(events: int) -> None:
    with nginx(events) as (upstream, proxy), tempfile.TemporaryDirectory() as directory:
        config = Path(directory) / "gateway.yaml"
        config.write_text(json.dumps({
            "pools": {"sse": {"discovery": {"kind": "static", "urls": [upstream]}}},
            "routes": [{"prefix": "/v1", "pool": "sse"}],
        }))  # fmt: skip
        argv = [
            sys.executable, "-m", "prsm", "gateway", "--config", str(config), "--port", "{port}"
        ]  # fmt: skip
        env = {"PRSM_LOG_LEVEL": "warning"}
        with run_server(argv, "/ready", env) as gateway:
            results = {
                "upstream directly": events_per_second(upstream + "/v1/stream", 3),
                "nginx, proxy_buffering off": events_per_second(proxy + "/v1/stream", 3),
                "prsm gateway": events_per_second(gateway + "/v1/stream", 3),
            }
    print(f"relaying {events} events of one stream (best of 3):")
    for name, rate in results.items():
        print(f"  {name:28}: {rate:10.0f} events/s")
    ratio = results["prsm gateway"] / results["nginx, proxy_buffering off"]
    print(f"  prsm gateway / nginx      : {ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--events", type=int, default=20000)
    args = parser.parse_args()
    model_part(args.runs)
    relay_part(args.events)


if __name__ == "__main__":
    main()
