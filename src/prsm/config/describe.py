"""The settings tree as `prsm config` shows it: every leaf with its doc, default, environment
variable and value, secrets and passwords masked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr

from prsm.config.sections import ApiKey
from prsm.config.settings import Settings, env_name, leaves


@dataclass(frozen=True, slots=True)
class SettingInfo:
    """One leaf of the settings tree, as `prsm config` shows it."""

    key: str
    env: str
    doc: str
    default: Any
    value: Any


def describe_settings(settings: Settings) -> list[SettingInfo]:
    """Every leaf setting with its doc, default, environment variable and current value."""
    infos = []
    for key, field in leaves(Settings):
        value: Any = settings
        for part in key.split("."):
            value = getattr(value, part)
        default = field.get_default(call_default_factory=True)
        infos.append(
            SettingInfo(
                key=key,
                env=env_name(key),
                doc=field.description or "",
                default=_display(default),
                value=_display(value),
            )
        )
    return infos


def _display(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return "**********" if value.get_secret_value() else ""
    if isinstance(value, list):
        return [_display(v) for v in value]
    if isinstance(value, ApiKey):
        return f"**********:{value.tier}"
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, str) and "://" in value:
        return _without_password(value)
    return value


def _without_password(url: str) -> str:
    """A URL with its password masked: `redis://:**********@host:6379/0`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user, _, host = parts.netloc.rpartition("@")
    name = user.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{name}:**********@{host}"))
