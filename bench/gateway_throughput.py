"""Requests/s and latency through `prsm gateway`, beside nginx as a reverse proxy, in one run.

The upstream is nginx answering the query contract from memory (one worker): the fastest
upstream this machine has, so the proxies' own cost shows. Measured with wrk, 32 connections:
the upstream directly; nginx (one worker) proxying with keep-alive and a per-IP rate limit;
`prsm gateway` (one process) with a per-IP rate limit, correlation ids, metrics and tracing
(SDK on, no exporter). Needs `wrk` and `nginx` (Debian: apt-get install wrk nginx).

    .venv/bin/python bench/gateway_throughput.py [--seconds 10] [--connections 32]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from pathlib import Path

from _harness import free_port, run_nginx, run_server, wrk
from reference_app import ANSWER

BODY = b'{"prompt":"What is the capital of France?","userId":"u1"}'

SERVERS = """
    limit_req_zone $binary_remote_addr zone=perip:10m rate=1000000r/s;
    upstream prsm {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{upstream_port};
        location / {{ default_type application/json; return 200 '{answer}'; }}
    }}
    server {{
        listen 127.0.0.1:{proxy_port};
        location / {{
            limit_req zone=perip burst=1000000 nodelay;
            proxy_pass http://prsm;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
"""


def nginx(upstream_port: int, proxy_port: int) -> contextlib.AbstractContextManager[None]:
    """nginx answering the query contract from memory, and proxying to itself."""
    servers = SERVERS.format(
        upstream_port=upstream_port, proxy_port=proxy_port, answer=ANSWER.decode()
    )
    return run_nginx(servers, "/", upstream_port)


def gateway_config(upstream: str) -> dict[str, object]:
    return {
        "pools": {"api": {"discovery": {"kind": "static", "urls": [upstream]}}},
        "routes": [
            {
                "prefix": "/api/v1",
                "pool": "api",
                "rate_limit": {"limit": "100000000/minute", "key": "ip"},
            }
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument(
        "--trace-ratio", type=float, default=1.0, help="share of requests traced (1: all)"
    )
    args = parser.parse_args()
    load = {"body": BODY, "connections": args.connections, "seconds": args.seconds}

    def measure(url: str) -> dict[str, float]:
        wrk(url, **load | {"seconds": 2})  # type: ignore[arg-type]
        return wrk(url, **load)  # type: ignore[arg-type]

    upstream_port, proxy_port = free_port(), free_port()
    upstream = f"http://127.0.0.1:{upstream_port}"
    results: dict[str, dict[str, float]] = {}
    with nginx(upstream_port, proxy_port), tempfile.TemporaryDirectory() as directory:
        results["upstream directly (nginx return)"] = measure(upstream + "/api/v1/query")
        results["nginx reverse proxy"] = measure(f"http://127.0.0.1:{proxy_port}/api/v1/query")
        config = Path(directory) / "gateway.yaml"
        config.write_text(json.dumps(gateway_config(upstream)))
        argv = [
            sys.executable, "-m", "prsm", "gateway",
            "--config", str(config), "--port", "{port}",
        ]  # fmt: skip
        env = {"PRSM_LOG_LEVEL": "warning", "OTEL_TRACES_EXPORTER": "none"}
        if args.trace_ratio < 1:
            env |= {
                "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": str(args.trace_ratio),
            }
        with run_server(argv, "/ready", env) as base:
            results["prsm gateway"] = measure(base + "/api/v1/query")
    print(f"wrk, {args.connections} connections, {args.seconds}s; one process each; "
          f"gateway traces {args.trace_ratio:.0%} of requests")  # fmt: skip
    for name, r in results.items():
        print(f"{name:32}: {r['rps']:8.0f} req/s   p50 {r['p50']:6.2f} ms   p99 {r['p99']:6.2f} ms")
    direct = results["upstream directly (nginx return)"]
    ours, theirs = results["prsm gateway"], results["nginx reverse proxy"]
    print(f"prsm gateway / nginx requests/s: {ours['rps'] / theirs['rps']:.2f} (goal >= 0.25)")
    print(f"p99 added by prsm gateway: {ours['p99'] - direct['p99']:.2f} ms (goal <= 5 ms)")


if __name__ == "__main__":
    main()
