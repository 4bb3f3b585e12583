"""Running the API under uvicorn: what `prsm serve` does after parsing its options."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path

import uvicorn

from prsm.config import CONFIG_FILE_ENV, Settings
from prsm.logs import configure_logging
from prsm.metrics import MULTIPROC_ENV
from prsm.server.tls import uvicorn_options

DEV_KEY_FILE = "dev-api-key"
APP_FACTORY = "prsm.server.app:create_app_from_env"


def dev_key_path(settings: Settings) -> Path:
    """Where `prsm serve` keeps the API key it made for a run without keys."""
    return settings.state_dir / DEV_KEY_FILE


def make_dev_key(settings: Settings) -> str:
    """A fresh API key for this run, kept in `state_dir` (mode 0600) for `prsm query`."""
    key = secrets.token_urlsafe(24)
    path = dev_key_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key


def read_dev_key(settings: Settings) -> str | None:
    """The API key a previous run made, if there is one."""
    try:
        return dev_key_path(settings).read_text().strip() or None
    except OSError:
        return None


def serve(settings: Settings, config_file: Path | None = None) -> None:
    """Run the API in the foreground until interrupted.

    Each worker process builds its app from the environment, so everything decided here
    (the config file, a generated key, the metrics directory) is passed on through it.
    """
    if config_file is not None:
        os.environ[CONFIG_FILE_ENV] = str(config_file.resolve())
    configure_logging(settings.log_level, settings.log_format)
    metrics_dir = None
    if settings.server.workers > 1 and not os.environ.get(MULTIPROC_ENV):
        metrics_dir = tempfile.mkdtemp(prefix="prsm-metrics-")
        os.environ[MULTIPROC_ENV] = metrics_dir
    try:
        uvicorn.run(
            APP_FACTORY,
            factory=True,
            host=settings.server.host,
            port=settings.server.port,
            workers=settings.server.workers,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=10,
            **uvicorn_options(settings.tls),
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
