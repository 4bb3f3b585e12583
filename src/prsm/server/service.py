"""The query service: engine life cycle, admission, timeouts, metrics and logs of a query.

Free of HTTP: the routes in `prsm.server.app` parse and authenticate, this answers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from prsm import metrics, tracing
from prsm.config import ModelSettings, Settings
from prsm.contracts import CheckResult, Priority, QueryData, QueryRequest, QueryResponse
from prsm.engines import Embedder, Embeddings, Engine, Generation, load_engine
from prsm.engines.base import DEFAULT_OPTIONS, Options, Prompt, fingerprint
from prsm.engines.constraints import ResponseFormat
from prsm.engines.embedding import is_embedder
from prsm.engines.grammars import compiled_grammar
from prsm.engines.tally import Tally, tallied
from prsm.engines.text import TextSink
from prsm.errors import (
    GatewayTimeoutError,
    HTTPStatusError,
    ServiceUnavailableError,
    UnenforceableSchemaError,
    ValidationError,
)
from prsm.events import EventSink
from prsm.resilience.handler import Handler, chain
from prsm.server.admission import Admission
from prsm.server.auth import Principal
from prsm.server.budgets import NOTHING, Budgets, Reservation
from prsm.server.choices import generate_choices
from prsm.server.recording import Outcome, Recorder, usage_of
from prsm.server.response_cache import Lookup, ResponseCache, cache_key, prompt_parts

log = logging.getLogger("prsm.query")

EngineLoader = Callable[[], Awaitable[Engine | Embedder]]


@dataclass(frozen=True, slots=True)
class Ask:
    """One query, whichever wire format it came in: PRSM's own or OpenAI's."""

    prompt: Prompt
    user_id: str
    max_tokens: int | None = None
    priority: Priority = "normal"
    model: str | None = None
    context: dict[str, Any] | None = None
    options: Options = DEFAULT_OPTIONS
    operation: str = "query"
    """The metrics' `method`, and the span's operation: query, chat or text_completion."""
    schema_param: str = "responseSchema"
    """Where the request spelled its answer's schema, for a refusal to name."""
    wire: dict[str, Any] = field(default_factory=dict)
    """The request as received, carried by a failure's event."""
    choices: int = 1
    """How many answers to generate (OpenAI's `n`)."""
    seeded: bool = True
    """Whether sampling repeats (a seed the caller or the settings chose); OpenAI's routes
    without a `seed` sample anew each time, and such answers are never cached."""
    cache_read: bool = True
    """Whether an answer may come from the response cache (`Cache-Control: no-cache`: no)."""
    cache_write: bool = True
    """Whether the answer may be kept in it (`Cache-Control: no-store`: no)."""

    @classmethod
    def from_query(cls, request: QueryRequest) -> Ask:
        """The query a `POST /api/v1/query` body asks."""
        options = DEFAULT_OPTIONS
        if request.response_schema is not None:
            options = Options(
                response_format=ResponseFormat("json_schema", request.response_schema)
            )
        return cls(
            prompt=request.prompt,
            user_id=request.user_id,
            max_tokens=request.max_tokens,
            priority=request.priority,
            model=request.model,
            context=request.context,
            options=options,
            wire=request.to_wire(),
        )

    @property
    def prompt_chars(self) -> int:
        """The prompt's length in characters (logged instead of the prompt)."""
        if isinstance(self.prompt, str):
            return len(self.prompt)
        return sum(len(m.content) for m in self.prompt)


def query_response(generation: Generation, cid: str) -> QueryResponse:
    """The answer in PRSM's own wire format."""
    return QueryResponse(
        data=QueryData(
            answer=generation.text,
            confidence=generation.confidence,
            usage=usage_of(generation),
            model=generation.model,
        ),
        correlation_id=cid,
    )


def _not_started() -> Outcome:
    """The outcome of a query the recording step has not reached (never recorded): its own,
    so that a step run without recording cannot write into another query's."""
    return Outcome(started=0.0, model="none")


_ANSWER_SETTINGS = {"system_prompt", "temperature", "seed", "repeat_penalty", "context_size"}
"""The engine settings an answer depends on, beyond the model and the query's own options."""


class QueryService:
    """Answers the queries of one model with its engine, loaded in the background so probes
    answer at once; with its own admission, so that one saturated model does not hold up
    another's queries."""

    def __init__(
        self,
        settings: Settings,
        loader: EngineLoader | None = None,
        events: EventSink | None = None,
        cache: ResponseCache | None = None,
        budgets: Budgets | None = None,
        model: ModelSettings | None = None,
    ) -> None:
        self.settings = settings
        self.spec = model or settings.served_models()[0]
        """The served model: its names, what it serves, its engine's settings."""
        self._cache = cache
        self._budgets = budgets
        self._loader = loader or (lambda: load_engine(self.spec))
        self.engine: Engine | Embedder | None = None
        self.load_error: str | None = None
        self._loading: asyncio.Task[None] | None = None
        engine = self.spec
        self.admission = Admission(
            engine.at_once,
            max_queue=engine.max_queue,
            queue_timeout=engine.queue_timeout_seconds,
            retry_after=engine.retry_after_seconds,
        )
        self._service = settings.service_name
        self._recorder = Recorder(events, settings.service_name, settings.instance_id)
        self._generation, self._embedding = self._steps()
        metrics.show_zero(metrics.QUERIES_CANCELLED, (self._service, "client_gone"))

    def start(self) -> None:
        """Load the engine in the background."""
        self._loading = asyncio.create_task(self._load(), name="prsm-engine-load")

    async def _load(self) -> None:
        started = time.perf_counter()
        try:
            self.engine = await self._loader()
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.error("engine failed to load: %s", self.load_error)
            return
        rejected = ((self._service, self._label, reason) for reason in ("saturated", "timeout"))
        metrics.show_zero(metrics.ENGINE_REJECTED, *rejected)
        log.info(
            "engine ready",
            extra={
                "engine": self.spec.kind,
                "model": self.engine.model,
                "loadSeconds": round(time.perf_counter() - started, 3),
            },
        )

    async def wait_loaded(self) -> None:
        """Wait until the engine has loaded (or failed to)."""
        if self._loading is not None:
            await self._loading

    async def stop(self) -> None:
        """Stop loading, or close the engine."""
        if self._loading is not None:
            self._loading.cancel()
            await asyncio.gather(self._loading, return_exceptions=True)
        if self.engine is not None:
            await self.engine.aclose()
            self.engine = None

    def engine_check(self) -> CheckResult:
        """Whether the engine is loaded, loading or failed, for readiness."""
        if self.engine is not None:
            engine = CheckResult(ok=True, detail=f"{self.engine.model} loaded")
        elif self.load_error is not None:
            engine = CheckResult(ok=False, detail=f"failed to load: {self.load_error}")
        else:
            engine = CheckResult(ok=False, detail="loading")
        return engine

    async def answer(
        self,
        ask: Ask,
        principal: Principal,
        cid: str,
        on_text: TextSink | None = None,
        notes: dict[str, Any] | None = None,
    ) -> Generation:
        """Generate the answer to `ask`, passing its text to `on_text` as it comes; counted,
        logged and published as an event whether it succeeds, fails or is cancelled. The
        headers the answer carries for the cache's verdict and the caller's budget go into
        `notes` (the request's state). The steps are `_generation`'s."""
        result = await self._generation(Query(ask, principal, cid, on_text, notes))
        assert isinstance(result, Generation)
        return result

    async def embed(
        self, ask: Ask, texts: list[str], principal: Principal, cid: str,
        notes: dict[str, Any] | None = None,
    ) -> Embeddings:  # fmt: skip
        """The vectors of `texts`, recorded, budgeted and admitted as a query is (`ask` says
        who asks, and how the event and metrics name it). The steps are `_embedding`'s."""
        result = await self._embedding(Query(ask, principal, cid, None, notes, texts))
        assert isinstance(result, Embeddings)
        return result

    async def refuse(self, ask: Ask, principal: Principal, cid: str, error: Exception) -> None:
        """Record `ask` as failed with `error` without running it (a model that is not
        served), then raise `error`."""
        async with self._recorder.recorded(ask, principal, cid, self._label):
            raise error

    def _steps(self) -> tuple[QueryHandler, QueryHandler]:
        """The query path, built once: the engine's call wrapped in the steps every query
        takes, outermost first — recording (metrics, event, log line), the loaded engine,
        the response cache, the budget, the grammar's compilation
        (generations), admission (concurrency and queue), the engine's time limit."""
        outer = (self._recording, self._loaded_engine)
        inner = (self._budgeted, self._admitted_step, self._time_limited_step)
        generation = chain(*outer, self._cached, inner[0], _grammar_step, *inner[1:])
        return generation(self._generate), chain(*outer, self._cached, *inner)(self._embed)

    def _recording(self, next_step: QueryHandler) -> QueryHandler:
        async def recorded(query: Query) -> Result:
            async with self._recorder.recorded(
                query.ask, query.principal, query.cid, self._label
            ) as outcome:
                query.outcome = outcome
                return await next_step(query)

        return recorded

    def _loaded_engine(self, next_step: QueryHandler) -> QueryHandler:
        async def loaded(query: Query) -> Result:
            if query.texts is None:
                query.engine = self.ready_engine()
                query.max_tokens = query.ask.max_tokens or self.spec.default_max_tokens
            else:
                query.engine = self.ready_embedder()
            return await next_step(query)

        return loaded

    def _cached(self, next_step: QueryHandler) -> QueryHandler:
        async def cached(query: Query) -> Result:
            ask, principal, engine = query.ask, query.principal, query.engine
            assert engine is not None
            if query.texts is not None:
                return await self._cached_vectors(query, next_step)
            lookup = self._lookup(ask, principal, engine.model, query.max_tokens)
            if lookup is None or self._cache is None:
                return await next_step(query)
            if self._budgets is not None:  # a hit's headers; a miss's reservation replaces them
                await self._budgets.report(principal.account, query.notes)

            async def generate(sink: TextSink | None) -> Generation:
                result = await next_step(dataclasses.replace(query, on_text=sink))
                assert isinstance(result, Generation)
                return result

            generation, query.outcome.from_cache = await self._cache.answer(
                lookup, query.on_text, generate, query.notes
            )
            query.outcome.generation = generation
            return generation

        return cached

    async def _cached_vectors(self, query: Query, next_step: QueryHandler) -> Result:
        """Embeddings kept in the response cache: by the model, the caller and the texts."""
        engine, cache = query.engine, self._cache
        assert engine is not None
        ask = query.ask
        if cache is None or not (ask.cache_read or ask.cache_write):
            return await next_step(query)
        key = cache_key({"model": fingerprint(engine.model), "who": query.principal.account.tag,
                         "operation": ask.operation, "texts": query.texts})  # fmt: skip

        async def compute() -> Embeddings:
            result = await next_step(query)
            assert isinstance(result, Embeddings)
            return result

        lookup = Lookup(key, read=ask.cache_read, write=ask.cache_write)
        embeddings, query.outcome.from_cache = await cache.vectors(lookup, compute, query.notes)
        query.outcome.generation = _counted(embeddings)
        return embeddings

    def _budgeted(self, next_step: QueryHandler) -> QueryHandler:
        async def budgeted(query: Query) -> Result:
            reservation = await self._reserved(query)
            if reservation is NOTHING:  # nothing to settle: no tally, no shielded task
                return await next_step(query)
            result: Result | None = None
            with tallied() as tally:
                try:
                    result = await next_step(query)
                    return result
                finally:
                    spent = _spent(reservation, result, tally if query.outcome.admitted else None)
                    await asyncio.shield(reservation.settle(spent))

        return budgeted

    def _admitted_step(self, next_step: QueryHandler) -> QueryHandler:
        async def admitted(query: Query) -> Result:
            await self._admit(query.ask.priority)
            query.outcome.admitted = True
            try:
                return await next_step(query)
            finally:
                self._leave()

        return admitted

    def _time_limited_step(self, next_step: QueryHandler) -> QueryHandler:
        """The engine's time limit: past it, the generation is cancelled and this is 504."""

        async def limited(query: Query) -> Result:
            timeout = self.spec.timeout_seconds
            try:
                async with asyncio.timeout(timeout):
                    return await next_step(query)
            except TimeoutError:
                metrics.child(metrics.ENGINE_REJECTED, self._service, self._label, "timeout").inc()
                raise GatewayTimeoutError(
                    f"the engine did not answer within {timeout:g}s", code="engine_timeout"
                ) from None

        return limited

    async def _generate(self, query: Query) -> Result:
        """The endpoint of a generation: one engine call in its span, timed."""
        engine = query.engine
        assert engine is not None
        assert not is_embedder(engine)
        generation = await self._generated(
            engine, query.ask, query.max_tokens, query.outcome.started, query.on_text
        )
        query.outcome.generation = generation
        return generation

    async def _embed(self, query: Query) -> Result:
        """The endpoint of embeddings: the embedding engine's call."""
        engine, texts = query.engine, query.texts
        assert is_embedder(engine)
        assert texts is not None
        embeddings = await engine.embed(texts)
        query.outcome.generation = _counted(embeddings)
        return embeddings

    async def _reserved(self, query: Query) -> Reservation:
        """The account's budget (the caller's, or the submitter's of the job a worker runs)
        charged with the most this query may cost: its prompt's tokens, and `max_tokens` for
        each answer (embeddings: the tokens of their texts); 429 when it has no room."""
        budgets, account, ask = self._budgets, query.principal.account, query.ask
        if budgets is None or not budgets.budget_of(account).limited:
            return NOTHING
        engine = query.engine
        assert engine is not None
        if is_embedder(engine):
            assert query.texts is not None
            prompt, answers = await engine.count_tokens(query.texts), 0
        else:
            prompt = await engine.count_tokens(ask.prompt, ask.options)
            answers = query.max_tokens * ask.choices
        return await budgets.reserve(account, prompt, answers, query.notes, self.name)

    def _lookup(self, ask: Ask, principal: Principal, model: str, max_tokens: int) -> Lookup | None:
        """Where a repeatable query's answer is kept (None: not cached)."""
        engine = self.spec
        temperature = (
            engine.temperature if ask.options.temperature is None else ask.options.temperature
        )
        if self._cache is None or (temperature > 0 and not ask.seeded):
            return None
        if not (ask.cache_read or ask.cache_write):
            return None
        options = ask.options if temperature > 0 else dataclasses.replace(ask.options, seed=None)
        key = cache_key({
            "model": fingerprint(model),
            "engine": engine.model_dump(mode="json", include=_ANSWER_SETTINGS),
            "who": principal.account.tag,
            "operation": ask.operation,
            "prompt": prompt_parts(ask.prompt),
            "options": options,
            "max_tokens": max_tokens,
            "choices": ask.choices,
        })  # fmt: skip
        return Lookup(key, read=ask.cache_read, write=ask.cache_write)

    @property
    def name(self) -> str | None:
        """The model's id: its configured name, or its engine's once loaded (None before)."""
        if self.spec.name is not None:
            return self.spec.name
        return self.engine.model if self.engine is not None else None

    @property
    def _label(self) -> str:
        """The model's name in metrics: its id (from the settings or the engine's file, so
        the label set stays bounded)."""
        return self.name or "none"

    @property
    def names(self) -> list[str]:
        """Every id that reaches this model: its own, then its aliases."""
        return [self.name, *self.spec.aliases] if self.name is not None else []

    async def _generated(
        self,
        engine: Engine,
        ask: Ask,
        max_tokens: int,
        started: float,
        on_text: TextSink | None,
    ) -> Generation:
        """One generation in its span, timed: to its first token, and per token after it."""
        with tracing.engine_span(engine.model, max_tokens, ask.operation) as span:
            generation = await generate_choices(
                engine, ask.prompt, max_tokens, ask.options, ask.choices, on_text
            )
            if span is not None:
                span.set_attributes(
                    {
                        "gen_ai.usage.input_tokens": generation.prompt_tokens,
                        "gen_ai.usage.output_tokens": generation.completion_tokens,
                        "gen_ai.response.finish_reasons": (generation.finish_reason,),
                        "response.confidence": generation.confidence,
                    }
                )
        metrics.record_cached_prompt(self._service, engine.model, generation.cached_tokens)
        first = generation.first_token_at
        if first is not None:
            metrics.record_token_times(
                self._service,
                engine.model,
                first=first - started,
                rest=time.perf_counter() - first,
                tokens=generation.completion_tokens,
            )
        return generation

    def ready_engine(self) -> Engine:
        """The loaded generative engine; 503 `not_ready` while it loads or after it failed."""
        engine = self.loaded()
        if is_embedder(engine):
            raise serves_not("generation", engine.model, "embeddings")
        return engine

    def ready_embedder(self) -> Embedder:
        """The loaded embedding engine; 503 `not_ready` while it loads or after it failed."""
        engine = self.loaded()
        if not is_embedder(engine):
            raise serves_not("embeddings", engine.model, "generation")
        return engine

    def loaded(self) -> Engine | Embedder:
        """The loaded engine, of either kind; 503 `not_ready` while it loads or after it failed."""
        if self.engine is not None:
            return self.engine
        detail = self.engine_check().detail
        raise ServiceUnavailableError(
            f"the engine is not ready ({detail})", code="not_ready", retry_after=1, not_run=True
        )

    async def _admit(self, priority: Priority) -> None:
        """Wait for one of the engine's slots, counted as waiting; 503 `saturated` (counted as
        rejected) when admission refuses. `_leave` gives the slot back."""
        labels = (self._service, self._label)
        waiting = metrics.child(metrics.ENGINE_WAITING, *labels)
        waiting.inc()
        try:
            await self.admission.acquire(priority)
        except HTTPStatusError:
            metrics.child(metrics.ENGINE_REJECTED, *labels, "saturated").inc()
            raise
        finally:
            waiting.dec()
        metrics.child(metrics.ENGINE_IN_FLIGHT, *labels).inc()

    def _leave(self) -> None:
        """Give back the slot `_admit` took."""
        metrics.child(metrics.ENGINE_IN_FLIGHT, self._service, self._label).dec()
        self.admission.release()
        self.report_kv_cells()

    def report_kv_cells(self) -> None:
        """Set the KV-cache gauges from an engine that keeps one (llama.cpp's); read when a
        query ends and when Prometheus scrapes."""
        kv_cells = getattr(self.engine, "kv_cells", None)  # only a KV-cache engine has it
        if kv_cells is None:
            return
        used, total = kv_cells()
        labels = (self._service, self._label)
        metrics.ENGINE_KV_CELLS_USED.labels(*labels).set(used)
        metrics.ENGINE_KV_CELLS.labels(*labels).set(total)
        metrics.ENGINE_KV_USAGE.labels(*labels).set(used / total if total else 0.0)


Result = Generation | Embeddings
"""What the query path ends with: an answer, or vectors."""


@dataclass(eq=False, slots=True)
class Query:
    """One query on its way through the steps (`QueryService._steps`): what it asks, for
    whom, where its text goes; the steps fill in its outcome, engine and answer length."""

    ask: Ask
    principal: Principal
    cid: str
    on_text: TextSink | None = None
    notes: dict[str, Any] | None = None
    texts: list[str] | None = None
    """Embeddings: the texts to embed (None: a generation)."""
    outcome: Outcome = field(default_factory=_not_started)
    """How it is going (set by the recording step, which starts the clock)."""
    engine: Engine | Embedder | None = None
    """The model's engine, once the query found it loaded."""
    max_tokens: int = 0


QueryHandler = Handler[Query, Result]


def _grammar_step(next_step: QueryHandler) -> QueryHandler:
    """Compile the grammar the answer is held to, off the event loop, before admission."""

    async def compiled(query: Query) -> Result:
        await _grammar_compiled(query.ask)
        return await next_step(query)

    return compiled


def _counted(embeddings: Embeddings) -> Generation:
    """What the recording counts of embeddings: the tokens read, by the model."""
    return Generation(text="", prompt_tokens=embeddings.prompt_tokens, completion_tokens=0,
                      confidence=1.0, model=embeddings.model)  # fmt: skip


def _spent(reservation: Reservation, result: Result | None, tally: Tally | None) -> int:
    """What a query cost its budget: a generation's tokens (`Reservation.spent`), embeddings'
    tokens read; when admitted and failed, what it reserved or generated."""
    if isinstance(result, Embeddings):
        return result.prompt_tokens
    return reservation.spent(result, tally)


def serves_not(wanted: str, model: str, served: str) -> ValidationError:
    """422 `wrong_model_kind` (400 on /v1) for a request of a kind its model does not serve
    (a chat model's embeddings)."""
    return ValidationError(
        f"model {model!r} serves {served}, not {wanted}", code="wrong_model_kind", param="model"
    )


async def _grammar_compiled(ask: Ask) -> None:
    """Compile the grammar `ask`'s answer is held to, off the event loop (the engine finds it
    kept); 400 `invalid_schema` naming where the request spelled it if it cannot be enforced."""
    options = ask.options
    try:
        await compiled_grammar(options.tools, options.response_format)
    except UnenforceableSchemaError as exc:
        param = "tools" if options.tools.active else ask.schema_param
        raise ValidationError(str(exc), code="invalid_schema", param=param) from None
