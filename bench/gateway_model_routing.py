"""What routing by the body's `model` costs at the gateway, against routing by path, in one run.

One `prsm gateway` process, two pools (both nginx answering from memory, so the gateway's own
cost shows), two ways to reach them: `/by-path/small/...` and `/by-path/big/...` by prefix, and
`/v1/...` by the `model` of the JSON body (a configured map; learning changes nothing per
request). The body is a chat request of a realistic size (a system prompt and a few turns,
~2 KB). wrk, one connection count, each way measured twice, alternating. Needs `wrk` and
`nginx` (Debian: apt-get install wrk nginx).

    .venv/bin/python bench/gateway_model_routing.py [--seconds 10] [--connections 32]
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from _harness import free_port, run_nginx, run_server, wrk, wrk_arguments
from reference_app import ANSWER

TURNS = [
    {"role": "system", "content": "You are a careful assistant for an insurance company. " * 12},
    {"role": "user", "content": "What does my policy cover when a pipe bursts in winter?"},
    {"role": "assistant", "content": "Water damage from a sudden burst pipe is covered. " * 6},
    {"role": "user", "content": "And the cost of finding the leak behind the wall?"},
]
BODY = json.dumps({"model": "small", "messages": TURNS, "temperature": 0}).encode()

SERVERS = """
    server {{
        listen 127.0.0.1:{port};
        location / {{ default_type application/json; return 200 '{answer}'; }}
    }}
"""


def gateway_config(upstream: str) -> dict[str, object]:
    pools = {name: {"discovery": {"kind": "static", "urls": [upstream]}} for name in ("a", "b")}
    return {
        "pools": pools,
        "routes": [
            {"prefix": "/by-path/small", "rewrite": "/v1", "pool": "a"},
            {"prefix": "/by-path/big", "rewrite": "/v1", "pool": "b"},
            {
                "prefix": "/v1",
                "pool": "a",
                "models": {"learn": False, "map": {"small": "a", "big": "b"}},
            },
        ],
    }


def main() -> None:
    args, load = wrk_arguments(__doc__ or "", BODY)
    port = free_port()
    upstream = f"http://127.0.0.1:{port}"
    ways = {"by path": "/by-path/small/chat/completions", "by model": "/v1/chat/completions"}
    results: dict[str, list[dict[str, float]]] = {way: [] for way in ways}
    servers = SERVERS.format(port=port, answer=ANSWER.decode())
    with run_nginx(servers, "/", port), tempfile.TemporaryDirectory() as directory:
        config = Path(directory) / "gateway.yaml"
        config.write_text(json.dumps(gateway_config(upstream)))
        argv = [sys.executable, "-m", "prsm", "gateway", "--config", str(config),
                "--port", "{port}"]  # fmt: skip
        env = {"PRSM_LOG_LEVEL": "warning", "OTEL_TRACES_EXPORTER": "none"}
        with run_server(argv, "/ready", env) as base:
            for path in ways.values():
                wrk(base + path, **load | {"seconds": 2})  # type: ignore[arg-type]
            for _ in range(2):
                for way, path in ways.items():
                    results[way].append(wrk(base + path, **load))  # type: ignore[arg-type]
    print(f"wrk, {args.connections} connections, {args.seconds}s a run, a {len(BODY)}-byte body")
    best = {}
    for way, runs in results.items():
        best[way] = max(r["rps"] for r in runs)
        shown = "  ".join(f"{r['rps']:7.0f} req/s (p99 {r['p99']:5.2f} ms)" for r in runs)
        print(f"{way:9}: {shown}")
    ratio = best["by model"] / best["by path"]
    print(f"by model / by path requests/s: {ratio:.3f} (goal >= 0.90)")


if __name__ == "__main__":
    main()
