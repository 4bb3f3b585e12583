from __future__ import annotations

from pathlib import Path

import pytest

from prsm.config import ApiKey, describe_settings, env_name, load_settings
from prsm.errors import ConfigError
from tests.conftest import tmp_yaml


def test_defaults_load_without_any_source() -> None:
    """With no file and no environment, every setting has a sane default."""
    settings = load_settings()
    assert settings.engine.kind == "llama"
    assert settings.server.port == 8000
    assert settings.server.max_body_bytes == 1 << 20
    assert settings.api_keys == []


def test_environment_sets_nested_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """PRSM_ENGINE__CONCURRENCY reaches engine.concurrency, typed."""
    monkeypatch.setenv("PRSM_ENGINE__CONCURRENCY", "3")
    assert load_settings().engine.concurrency == 3


def test_api_keys_are_comma_separated_with_optional_tier(monkeypatch: pytest.MonkeyPatch) -> None:
    """PRSM_API_KEYS='a,b:premium' gives two keys, the second in the premium tier."""
    monkeypatch.setenv("PRSM_API_KEYS", "alpha, beta:premium")
    keys = load_settings().api_keys
    assert [(k.key.get_secret_value(), k.tier) for k in keys] == [
        ("alpha", "standard"),
        ("beta", "premium"),
    ]


def test_api_key_parse_rejects_empty_key() -> None:
    """A tier without a key is an error, not an empty key that matches nothing."""
    with pytest.raises(ValueError, match="empty"):
        ApiKey.parse(":premium")


def test_yaml_file_is_read_and_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file sets values; the environment overrides the file."""
    path = tmp_yaml(tmp_path, "service_name: from-file\nengine:\n  concurrency: 2\n")
    monkeypatch.setenv("PRSM_ENGINE__CONCURRENCY", "4")
    settings = load_settings(path)
    assert settings.service_name == "from-file"
    assert settings.engine.concurrency == 4


def test_config_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PRSM_CONFIG names the file when no path is given."""
    monkeypatch.setenv("PRSM_CONFIG", str(tmp_yaml(tmp_path, "server:\n  port: 9123\n")))
    assert load_settings().server.port == 9123


def test_unknown_key_in_file_is_rejected_by_name(tmp_path: Path) -> None:
    """A typo in the file names the key instead of being ignored."""
    path = tmp_yaml(tmp_path, "engine:\n  concurrancy: 2\n")
    with pytest.raises(ConfigError, match=r"engine\.concurrancy: unknown setting"):
        load_settings(path)


def test_unknown_environment_variable_is_rejected_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PRSM_ENGIN__KIND (a typo) is an error naming the variable."""
    monkeypatch.setenv("PRSM_ENGIN__KIND", "fixed")
    with pytest.raises(ConfigError, match="PRSM_ENGIN__KIND"):
        load_settings()


def test_invalid_value_names_key_and_value(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad value says which key, what is wrong and what was given."""
    monkeypatch.setenv("PRSM_SERVER__PORT", "eighty")
    with pytest.raises(ConfigError, match=r"server\.port: .*'eighty'"):
        load_settings()


def test_file_that_is_not_a_mapping_is_rejected(tmp_path: Path) -> None:
    """A YAML list at the top is a clear error."""
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(tmp_yaml(tmp_path, "- a\n- b\n"))


def test_broken_yaml_is_rejected(tmp_path: Path) -> None:
    """Unparseable YAML is a ConfigError, not a yaml traceback."""
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(tmp_yaml(tmp_path, "engine: [unclosed\n"))


def test_missing_file_is_rejected(tmp_path: Path) -> None:
    """A config path that does not exist is a ConfigError."""
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "absent.yaml")


def test_describe_lists_every_leaf_with_env_and_hides_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`prsm config` data: each leaf has a doc and env name; secrets (in URLs too) are masked."""
    monkeypatch.setenv("PRSM_API_KEYS", "supersecret:gold")
    monkeypatch.setenv("PRSM_REDIS_URL", "redis://cache:6379/0")
    monkeypatch.setenv("PRSM_REDIS_PASSWORD", "supersecret")
    infos = {info.key: info for info in describe_settings(load_settings())}
    assert infos["redis_url"].value == "redis://:**********@cache:6379/0"
    assert infos["engine.concurrency"].env == "PRSM_ENGINE__CONCURRENCY"
    assert infos["api_keys"].value == ["**********:gold"]
    assert "supersecret" not in repr([i.value for i in infos.values()])
    assert all(info.doc for info in infos.values())
    assert env_name("server.max_body_bytes") == "PRSM_SERVER__MAX_BODY_BYTES"


def test_tls_settings_are_checked_together(tmp_path: Path) -> None:
    """A key without a certificate, mTLS without HTTPS, or a missing file: clear errors."""
    pem = tmp_path / "x.pem"
    pem.write_text("not checked here")
    with pytest.raises(ConfigError, match="cert_file and key_file go together"):
        load_settings(tls={"key_file": str(pem)})
    with pytest.raises(ConfigError, match="needs cert_file"):
        load_settings(tls={"client_ca_file": str(pem)})
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(tls={"cert_file": str(pem), "key_file": str(tmp_path / "gone.key")})
    files = {"cert_file": str(pem), "key_file": str(pem), "client_ca_file": str(pem)}
    settings = load_settings(tls=files | {"allowed_clients": "a, b"})
    assert settings.tls.mutual
    assert settings.tls.allowed_clients == ["a", "b"]


def test_the_drain_bound_covers_the_grace() -> None:
    """server.drain_timeout_seconds shorter than server.drain_seconds is refused by name."""
    with pytest.raises(ConfigError, match="drain_timeout_seconds"):
        load_settings(server={"drain_seconds": 10, "drain_timeout_seconds": 5})


def test_redis_password_is_joined_into_a_url_without_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """PRSM_REDIS_PASSWORD goes into redis_url, URL-encoded; a URL with its own is kept."""
    monkeypatch.setenv("PRSM_REDIS_PASSWORD", "p@ss/word")
    joined = load_settings(redis_url="rediss://cache.internal:6380/2").redis_url
    assert joined == "rediss://:p%40ss%2Fword@cache.internal:6380/2"
    own = "redis://:mine@cache:6379/0"
    assert load_settings(redis_url=own).redis_url == own
    assert load_settings().redis_url is None


def test_a_model_inherits_the_engine_section_but_not_another_kind_s_file() -> None:
    """Unset tuning comes from `engine`; the file and name only for a model of the same kind;
    with no `models`, the engine section is the one model."""
    settings = load_settings(
        engine={"kind": "llama", "model_path": "/models/chat.gguf", "max_queue": 5},
        models=[{}, {"name": "minilm", "kind": "bert", "serves": "embeddings", "max_queue": 2}],
    )
    chat, minilm = settings.served_models()
    assert (chat.kind, str(chat.model_path), chat.max_queue, chat.name) == (
        "llama", "/models/chat.gguf", 5, None
    )  # fmt: skip
    assert (minilm.kind, minilm.model_path, minilm.max_queue) == ("bert", None, 2)
    assert load_settings(engine={"kind": "fixed"}).served_models()[0].kind == "fixed"


def test_models_come_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    """`PRSM_MODELS` is a JSON list, as `prsm up` and the chart write it."""
    monkeypatch.setenv("PRSM_MODELS", '[{"name": "a", "kind": "fixed", "aliases": ["b"]}]')
    (model,) = load_settings().served_models()
    assert (model.name, model.model_name, model.aliases) == ("a", "a", ["b"])


@pytest.mark.parametrize(
    ("models", "problem"),
    [
        ([{"name": "a", "kind": "fixed"}, {"name": "b", "kind": "fixed", "aliases": ["a"]}],
         "'a' names two models"),
        ([{"name": "e", "kind": "fixed", "serves": "embeddings"}], "kind `bert`"),
        ([{"name": "e", "kind": "bert"}], "serves embeddings"),
    ],
)  # fmt: skip
def test_models_that_clash_or_cannot_serve_are_refused(
    models: list[dict[str, object]], problem: str
) -> None:
    """Two models answering to one name, or a kind that cannot serve what is asked."""
    with pytest.raises(ConfigError, match=problem):
        load_settings(models=models)
