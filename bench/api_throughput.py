"""Requests/s of `prsm serve` with the fixed (instant) engine, beside a bare Starlette app.

Both run as one uvicorn process on the same loopback, driven by wrk with the same body and
connections; the ratio says what PRSM's per-request work (validation, auth, admission,
metrics, JSON logs, correlation ids) costs.

    .venv/bin/python bench/api_throughput.py [--connections 32] [--seconds 10]
"""

from __future__ import annotations

import contextlib
import sys

from _harness import prsm_serve, run_server, wrk, wrk_arguments

BODY = b'{"prompt":"What is the capital of France?","userId":"u1","maxTokens":16}'


def main() -> None:
    args, load = wrk_arguments(__doc__ or "", BODY)

    def measure(server: contextlib.AbstractContextManager[str]) -> dict[str, float]:
        with server as base:
            wrk(base + "/api/v1/query", **load | {"seconds": 2})  # type: ignore[arg-type]
            return wrk(base + "/api/v1/query", **load)  # type: ignore[arg-type]

    def uvicorn(app: str) -> contextlib.AbstractContextManager[str]:
        argv = [
            sys.executable, "-m", "uvicorn", app,
            "--port", "{port}", "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
        return run_server(argv, "/ready")

    results = {
        "bare Starlette app": measure(uvicorn("reference_app:app")),
        "bare FastAPI + pydantic": measure(uvicorn("reference_app:fastapi_app")),
        "prsm serve (fixed engine)": measure(
            prsm_serve({"PRSM_ENGINE__KIND": "fixed", "PRSM_ENGINE__MAX_QUEUE": "1000"})
        ),
    }
    print(f"wrk, {args.connections} connections, {args.seconds}s, one server process each")
    for name, r in results.items():
        print(f"{name:26}: {r['rps']:8.0f} req/s   p50 {r['p50']:6.2f} ms   p99 {r['p99']:6.2f} ms")
    prsm = results["prsm serve (fixed engine)"]["rps"]
    print(f"ratio prsm / bare Starlette : {prsm / results['bare Starlette app']['rps']:6.3f}")
    print(f"ratio prsm / bare FastAPI   : {prsm / results['bare FastAPI + pydantic']['rps']:6.3f}")


if __name__ == "__main__":
    main()
