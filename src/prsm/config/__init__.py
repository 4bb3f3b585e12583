"""One settings tree for every PRSM process.

Sources, strongest first: keyword arguments, `PRSM_*` environment variables (nested keys with a
double underscore: `PRSM_ENGINE__CONCURRENCY=2`), then an optional YAML file (`--config` or
`PRSM_CONFIG`). Unknown keys are rejected by name, in the file and in the environment alike, so
a typo never silently falls back to a default. `prsm config` prints the whole tree.

The tree's sections are in `prsm.config.sections`, its sources and loading in
`prsm.config.settings`, and `prsm config`'s listing in `prsm.config.describe`; every name is
importable from here.
"""

from prsm.config.describe import (
    SettingInfo,
    describe_settings,
)
from prsm.config.sections import (
    DEFAULT_TIER,
    ApiKey,
    Budget,
    BudgetSettings,
    CacheSettings,
    EngineSettings,
    EventSettings,
    GatewaySettings,
    HttpSettings,
    JobSettings,
    Limits,
    ModelSettings,
    OAuthSettings,
    ResponsesSettings,
    Section,
    ServerSettings,
    Serves,
    TLSSettings,
    comma_list,
)
from prsm.config.settings import (
    CONFIG_FILE_ENV,
    ENV_NESTED_DELIMITER,
    ENV_PREFIX,
    Settings,
    describe_invalid,
    env_name,
    known_env_names,
    load_settings,
    read_yaml_mapping,
    with_password,
)

__all__ = [
    "CONFIG_FILE_ENV",
    "DEFAULT_TIER",
    "ENV_NESTED_DELIMITER",
    "ENV_PREFIX",
    "ApiKey",
    "Budget",
    "BudgetSettings",
    "CacheSettings",
    "EngineSettings",
    "EventSettings",
    "GatewaySettings",
    "HttpSettings",
    "JobSettings",
    "Limits",
    "ModelSettings",
    "OAuthSettings",
    "ResponsesSettings",
    "Section",
    "ServerSettings",
    "Serves",
    "SettingInfo",
    "Settings",
    "TLSSettings",
    "comma_list",
    "describe_invalid",
    "describe_settings",
    "env_name",
    "known_env_names",
    "load_settings",
    "read_yaml_mapping",
    "with_password",
]
