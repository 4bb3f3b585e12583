"""The settings tree itself: its sources (arguments, `PRSM_*` variables, the YAML file), how
it is loaded, and how a wrong key or value is told."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import quote, urlsplit, urlunsplit

import yaml
from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from prsm.config.sections import (
    ApiKey,
    BudgetSettings,
    CacheSettings,
    EngineSettings,
    EventSettings,
    GatewaySettings,
    HttpSettings,
    JobSettings,
    ModelSettings,
    OAuthSettings,
    ResponsesSettings,
    Section,
    ServerSettings,
    TLSSettings,
    comma_list,
)
from prsm.errors import ConfigError

ENV_PREFIX = "PRSM_"
ENV_NESTED_DELIMITER = "__"
CONFIG_FILE_ENV = "PRSM_CONFIG"


def with_password(url: str, password: str) -> str:
    """`redis://host:6379/0` → `redis://:password@host:6379/0` (URL-encoded); a URL that
    already names a password or user is left as it is.

    >>> with_password("rediss://cache:6380/1", "p@ss")
    'rediss://:p%40ss@cache:6380/1'
    """
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        return url
    netloc = f":{quote(password, safe='')}@{parts.netloc}"
    return urlunsplit(parts._replace(netloc=netloc))


class Settings(BaseSettings):
    """Every PRSM setting. Build with `load_settings()` to get clear errors."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        extra="forbid",
        validate_default=True,
        case_sensitive=False,
    )

    service_name: str = Field(
        default="prsm-api", description="Service name in metrics, logs and traces."
    )
    instance_id: str = Field(
        default_factory=socket.gethostname,
        description="This instance's name in metrics and logs (the host name if unset).",
    )
    environment: Literal["production", "development", "test"] = Field(
        default="development", description="Deployment environment."
    )
    api_keys: Annotated[list[ApiKey], NoDecode] = Field(
        default_factory=list,
        description="Accepted API keys, comma-separated; `key:tier` sets the tier label. "
        "When empty, `prsm serve` makes one for the run and prints it.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Lowest level logged."
    )
    log_format: Literal["json", "console"] = Field(
        default="json", description="`json`: one JSON object a line; `console`: for people."
    )
    state_dir: Path = Field(
        default=Path(".prsm"),
        description="Where `prsm serve` writes run state such as the generated dev API key.",
    )
    base_url: str = Field(
        default="http://127.0.0.1:8000", description="SDK and CLI: the PRSM API base URL."
    )
    api_key: SecretStr | None = Field(
        default=None, description="SDK and CLI: the API key sent as a Bearer token."
    )
    timeout: float = Field(default=30.0, gt=0, description="SDK and CLI: seconds per request.")
    retries: int = Field(
        default=3, ge=0, le=10, description="SDK and CLI: retries on transient failures."
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis for events, jobs, budgets, the caches and the gateway's shared "
        "limits (any Redis >= 6.2): `redis://host:6379/0`, or a Sentinel deployment, "
        "`redis+sentinel://host:26379,host:26379/<master name>[/db]`. Unset: `prsm serve` "
        "runs without them; `prsm up` starts an embedded Redis.",
    )
    redis_password: SecretStr | None = Field(
        default=None,
        description="Joined into redis_url when that carries no password, so the URL can sit "
        "in a config file and the password in a secret (for Sentinel: the data servers').",
    )
    redis_sentinel_password: SecretStr | None = Field(
        default=None,
        description="The sentinels' own password, joined into a `redis+sentinel://` URL that "
        "names none (`?sentinel_password=`).",
    )
    redis_confirm_replicas: int = Field(
        default=0,
        ge=0,
        description="Writes whose loss matters — job submissions, budget charges — count as "
        "done only once this many Redis replicas hold them (Redis WAIT, up to a second), else "
        "503 as for a Redis that is down. 0: once the master has them. 1 survives the master's "
        "crash; the number of replicas also a manual failover.",
    )
    server: ServerSettings = Field(default_factory=ServerSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    models: list[ModelSettings] = Field(
        default_factory=list,
        description="The models this instance serves (a JSON list in the environment): each "
        "entry `name`, `aliases`, `serves` (`generation` or `embeddings`), `fallbacks`, and any "
        "`engine` key, those it leaves out taken from `engine` (see the models guide). Empty: "
        "the `engine` section's one model. The first of each kind is the default where a "
        "request names none.",
    )
    events: EventSettings = Field(default_factory=EventSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    responses: ResponsesSettings = Field(default_factory=ResponsesSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    budgets: BudgetSettings = Field(default_factory=BudgetSettings)
    oauth: OAuthSettings = Field(default_factory=OAuthSettings)
    tls: TLSSettings = Field(default_factory=TLSSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)

    yaml_data: ClassVar[dict[str, Any]] = {}
    """The parsed YAML file; `load_settings` sets it on a subclass."""

    @model_validator(mode="after")
    def _join_redis_password(self) -> Settings:
        if self.redis_url and self.redis_password is not None:
            self.redis_url = with_password(self.redis_url, self.redis_password.get_secret_value())
        sentinels = self.redis_sentinel_password
        url = self.redis_url or ""
        if (
            sentinels is not None
            and url.startswith("redis+sentinel:")
            and ("sentinel_password=" not in url)
        ):
            joiner = "&" if "?" in url else "?"
            secret = quote(sentinels.get_secret_value(), safe="")
            self.redis_url = f"{url}{joiner}sentinel_password={secret}"
        return self

    @model_validator(mode="after")
    def _models_inherit_engine(self) -> Settings:
        self.models = [ModelSettings.inheriting(self.engine, m) for m in self.models]
        kinds: dict[str, ModelSettings] = {}
        for model in self.models:
            for name in [*([model.name] if model.name else []), *model.aliases]:
                if kinds.setdefault(name, model) is not model:
                    raise ValueError(f"models: {name!r} names two models")
        for model in self.models:
            for name in model.fallbacks:
                other = kinds.get(name)
                if other is None or other is model or other.serves != model.serves:
                    raise ValueError(
                        f"models: {model.name}'s fallback {name!r} is not another model here "
                        f"that serves {model.serves}"
                    )
        return self

    def served_models(self) -> list[ModelSettings]:
        """The models this instance serves: `models`, or the `engine` section's alone."""
        if self.models:
            return self.models
        return [ModelSettings.model_validate(self.engine.model_dump())]

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        value = comma_list(value)
        if isinstance(value, list):
            return [ApiKey.parse(v) if isinstance(v, str) else v for v in value]
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Where settings come from, strongest first: arguments, the environment, the YAML file."""
        return (init_settings, env_settings, _YamlSource(settings_cls, cls.yaml_data))


class _YamlSource(PydanticBaseSettingsSource):
    """The already-parsed YAML file, weakest of the sources."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Settings from `overrides`, the environment and the YAML file, or a `ConfigError`.

    >>> load_settings(engine={"kind": "fixed"}).engine.kind
    'fixed'
    """
    path = config_file or os.environ.get(CONFIG_FILE_ENV)
    _reject_unknown_env(os.environ)
    settings_cls = _with_yaml(read_yaml_mapping(Path(path))) if path else Settings
    try:
        return settings_cls(**overrides)
    except PydanticValidationError as exc:
        raise ConfigError(describe_invalid(exc, "settings", unknown="unknown setting")) from None


def _with_yaml(data: dict[str, Any]) -> type[Settings]:
    return type("Settings", (Settings,), {"yaml_data": data})


def read_yaml_mapping(path: Path, what: str = "config file") -> dict[str, Any]:
    """The mapping at the top of the YAML file `path` (empty for an empty file), or a
    `ConfigError` that names the file as `what` and says what is wrong. The one reader of
    YAML settings: `prsm`'s own and the gateway's."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must hold a mapping at the top")
    return data


def describe_invalid(exc: PydanticValidationError, what: str, *, unknown: str) -> str:
    """`invalid <what>:` and one `dotted.key: problem` line per error; an unknown key reads
    as `unknown`, and a scalar that was refused is quoted."""
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top)"
        if error["type"] == "extra_forbidden":
            lines.append(f"{key}: {unknown}")
            continue
        value = error.get("input")
        scalar = value is None or isinstance(value, str | int | float | bool)
        lines.append(f"{key}: {error['msg']}" + (f" (got {value!r})" if scalar else ""))
    return f"invalid {what}:\n  " + "\n  ".join(lines)


def leaves(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every leaf setting under `model`: its dotted key and its pydantic field."""
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, Section):
            yield from leaves(annotation, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", field


def env_name(key: str) -> str:
    """The environment variable for a dotted key: `engine.concurrency` →
    `PRSM_ENGINE__CONCURRENCY`."""
    return ENV_PREFIX + key.replace(".", ENV_NESTED_DELIMITER).upper()


def known_env_names() -> set[str]:
    """Every `PRSM_*` environment variable name the settings tree knows (for error messages)."""
    names = {env_name(key) for key, _ in leaves(Settings)}
    names |= {
        env_name(name)
        for name, field in Settings.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, Section)
    }
    return names | {CONFIG_FILE_ENV}


def _reject_unknown_env(env: Mapping[str, str]) -> None:
    known = known_env_names()
    unknown = sorted(
        name for name in env if name.upper().startswith(ENV_PREFIX) and name.upper() not in known
    )
    if unknown:
        raise ConfigError(
            "unknown PRSM_ environment variable(s): "
            + ", ".join(unknown)
            + " (see `prsm config` for every setting)"
        )
