"""The `prsm` command: parse, load settings, call the library."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from prsm.config import Settings, describe_settings, env_name, load_settings
from prsm.errors import PRSMError, UsageError

if TYPE_CHECKING:
    from prsm.client import PRSMClient

app = typer.Typer(
    help="PRSM for microservices: serve AI queries and talk to the service.",
    no_args_is_help=True,
    add_completion=False,
)
out = Console()
err = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML settings file (else PRSM_CONFIG).", exists=True),
]


def _settings(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except UsageError as exc:
        err.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
    workers: Annotated[int | None, typer.Option(help="Server processes.")] = None,
    config: ConfigOption = None,
) -> None:
    """Run the PRSM API in the foreground."""
    from prsm.server.run import make_dev_key, serve

    # Options travel as environment variables so that every worker process sees them.
    for key, value in (("server.host", host), ("server.port", port), ("server.workers", workers)):
        if value is not None:
            os.environ[env_name(key)] = str(value)
    settings = _settings(config)
    if not settings.api_keys:
        key = make_dev_key(settings)
        os.environ[env_name("api_keys")] = key
        settings = _settings(config)
        base = f"http://{settings.server.host}:{settings.server.port}"
        err.print(
            "[yellow]No PRSM_API_KEYS set: made an API key for this run[/yellow] "
            f"(saved in {settings.state_dir / 'dev-api-key'} for `prsm query`):\n"
            f"  [bold]{key}[/bold]\n"
            f"  curl -X POST {base}/api/v1/query -H 'Authorization: Bearer {key}' "
            "-H 'Content-Type: application/json' "
            """-d '{"prompt":"What is the capital of France?","userId":"u1"}'""",
            soft_wrap=True,  # a wrapped command cannot be copied and pasted
        )
    serve(settings, config)


@contextlib.contextmanager
def _failure(label: str) -> Iterator[None]:
    """A PRSMError becomes one red line and exit code 1, not a traceback."""
    try:
        yield
    except PRSMError as exc:
        err.print(f"[red]{label}:[/red] {exc}")
        raise typer.Exit(1) from None


def _client(settings: Settings, api_key: str | None, base_url: str | None) -> PRSMClient:
    # Here, not at the top: `prsm serve`, `worker` and `gateway` need no HTTP client of ours.
    from prsm.client import PRSMClient
    from prsm.client.tls import ClientTLS
    from prsm.server.run import read_dev_key

    key = api_key or (
        settings.api_key.get_secret_value() if settings.api_key else read_dev_key(settings)
    )
    return PRSMClient(
        base_url=base_url or settings.base_url,
        api_key=key,
        timeout=settings.timeout,
        retries=settings.retries,
        tls=ClientTLS.from_env(),
    )


@app.command()
def query(
    prompt: Annotated[str, typer.Argument(help="The question or instruction.")],
    user: Annotated[str, typer.Option("--user", "-u", help="User id for accounting.")] = "cli",
    max_tokens: Annotated[int | None, typer.Option(help="Most tokens to generate.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the whole result as JSON.")
    ] = False,
    base_url: Annotated[str | None, typer.Option(help="API base URL (else PRSM_BASE_URL).")] = None,
    api_key: Annotated[str | None, typer.Option(help="API key (else PRSM_API_KEY).")] = None,
    config: ConfigOption = None,
) -> None:
    """Ask the PRSM API a question."""
    settings = _settings(config)
    with _failure("query failed"), _client(settings, api_key, base_url) as client:
        result = client.query(prompt, user_id=user, max_tokens=max_tokens)
    if as_json:
        payload = asdict(result) | {"usage": result.usage.model_dump(by_alias=True)}
        out.print_json(json.dumps(payload))
        return
    typer.echo(result.answer)
    err.print(
        f"[dim]confidence {result.confidence:.2f} · {result.usage.tokens} tokens · "
        f"{result.model} · correlation id {result.correlation_id}[/dim]",
        soft_wrap=True,
    )


@app.command()
def health(
    base_url: Annotated[str | None, typer.Option(help="API base URL (else PRSM_BASE_URL).")] = None,
    config: ConfigOption = None,
) -> None:
    """Check that the PRSM API is alive."""
    settings = _settings(config)
    with _failure("unhealthy"), _client(settings, None, base_url) as client:
        status = client.health()
    out.print(f"{status.status} (version {status.version}, up {status.uptime_seconds:.0f}s)")


@app.command()
def gateway(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="Gateway YAML (pools, routes); without it, /api/ai → the API at PRSM_BASE_URL.",
        ),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 3000).")] = None,
) -> None:
    """Run the API gateway in the foreground (SIGHUP reloads --config)."""
    from prsm import tracing
    from prsm.gateway.run import ReloadingGateway, default_config, serve
    from prsm.logs import configure_logging

    settings = _settings(None)
    configure_logging(settings.log_level, settings.log_format)
    tracing.configure("prsm-gateway")
    with _failure("gateway failed"):
        app = ReloadingGateway(
            config or settings.gateway.config,
            fallback=default_config(settings.base_url),
            drain_seconds=settings.gateway.drain_seconds,
            handle_signals=True,
            redis_url=settings.redis_url,
            api_key=settings.api_key.get_secret_value() if settings.api_key else None,
        )
    try:
        serve(app, host or settings.gateway.host, port or settings.gateway.port)
    finally:
        tracing.shutdown()


@app.command()
def worker(config: ConfigOption = None) -> None:
    """Run the job queues (priority, batch, scheduled) against the PRSM API."""
    from prsm import tracing
    from prsm.jobs.worker import run_worker
    from prsm.logs import configure_logging

    settings = _settings(config)
    configure_logging(settings.log_level, settings.log_format)
    tracing.configure(f"{settings.service_name}-worker")
    try:
        with _failure("worker failed"), contextlib.suppress(KeyboardInterrupt):
            _event_loop_run()(run_worker(settings))
    finally:
        tracing.shutdown()


def _event_loop_run() -> Callable[[Coroutine[Any, Any, None]], None]:
    """uvloop's `run` where it is installed — the loop uvicorn runs the API and the gateway
    on — else asyncio's."""
    try:
        import uvloop
    except ImportError:
        import asyncio

        return asyncio.run
    return uvloop.run


@app.command()
def up(config: ConfigOption = None) -> None:
    """Run everything on this machine: embedded Redis, the API and a worker. Ctrl-C stops all."""
    from prsm.up import up as run_stack

    if config is not None:
        os.environ["PRSM_CONFIG"] = str(config.resolve())
    raise typer.Exit(run_stack(_settings(config), err))


events_app = typer.Typer(help="Query events on Redis.", no_args_is_help=True)
app.add_typer(events_app, name="events")


@events_app.command("tail")
def events_tail(config: ConfigOption = None) -> None:
    """Print query events as they are published, one JSON object a line."""
    import asyncio

    from prsm.events.tail import tail_until_stopped

    settings = _settings(config)
    if not settings.redis_url:
        err.print("[red]events tail needs PRSM_REDIS_URL[/red]")
        raise typer.Exit(2)
    asyncio.run(tail_until_stopped(settings.redis_url, lambda line: typer.echo(line)))


@app.command("key-id")
def show_key_id(
    key: Annotated[
        str | None,
        typer.Argument(help="The API key (else read from standard input: no shell history)."),
    ] = None,
) -> None:
    """Print the id logs (`keyId`) and `budgets.callers` name an API key by."""
    from prsm.config import ApiKey
    from prsm.server.auth import key_id

    given = key if key is not None else typer.get_text_stream("stdin").readline()
    try:
        parsed = ApiKey.parse(given)  # as PRSM_API_KEYS entries are: `key` or `key:tier`
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    typer.echo(key_id(parsed.key.get_secret_value()))


@app.command("config")
def show_config(config: ConfigOption = None) -> None:
    """Print every setting: its doc, default, environment variable and current value."""
    settings = _settings(config)
    for info in describe_settings(settings):
        changed = "" if info.value == info.default else "  [yellow](changed)[/yellow]"
        out.print(f"[bold]{info.key}[/bold] = {info.value!r}{changed}", highlight=False)
        out.print(f"    {info.doc}", markup=False, highlight=False)
        out.print(f"    [dim]default {info.default!r} · env {info.env}[/dim]", highlight=False)


def main() -> None:
    """The `prsm` command's entry point: parse the arguments, run the sub-command, exit."""
    app()
