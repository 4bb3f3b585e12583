"""The chart's values schema is current with PRSM's settings and gateway config, and leaves
secrets out of the settings ConfigMap."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def generator(relative: str = "deploy/helm/values_schema.py") -> ModuleType:
    """A generator script of the repository, loaded as a module."""
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_committed_schema_is_what_the_generator_writes() -> None:
    """values.schema.json equals `python deploy/helm/values_schema.py` on today's settings."""
    values_schema = generator()
    assert values_schema.SCHEMA_PATH.read_text() == values_schema.rendered()


def test_secrets_cannot_be_put_in_the_settings_configmap() -> None:
    """Keys, the callback secret, Redis credentials and the OpenAI key are not settings values;
    nor are the ports and processes the chart itself decides."""
    schema = json.loads(generator().rendered())
    settings = schema["properties"]["settings"]["properties"]
    assert {"api_keys", "api_key", "redis_url", "redis_password"}.isdisjoint(settings)
    definitions = schema["$defs"]
    assert "callback_secret" not in definitions["JobSettings"]["properties"]
    assert "openai_api_key" not in definitions["EngineSettings"]["properties"]
    # Ports and processes follow the chart's own values (api.workers, the Services).
    assert {"host", "port", "workers"}.isdisjoint(definitions["ServerSettings"]["properties"])
    assert schema["properties"]["settings"]["additionalProperties"] is False
