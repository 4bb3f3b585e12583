"""Answer grammars compiled off the event loop, bounded, and kept.

Compiling a large JSON Schema or a long list of tools takes llguidance a noticeable time (a
450 KB schema about a quarter of a second), and even reading one through takes milliseconds:
on the event loop either would stall every other request, health probes included. So
`compiled_grammar` does neither there. Off the loop it checks the schemas against bounds
(their size as JSON, their nesting depth) and takes their digest; a grammar kept under that
digest is used at once (the same schema sent again, or the engine's after the server's
check); else it is compiled on a small pool of threads of its own, within a time limit. A
schema that cannot be enforced is kept as such too. The server asks for it only once the
cheap checks passed: the caller, the model, the budget.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prsm.engines.constraints import ResponseFormat
from prsm.engines.tools import ToolUse, answer_grammar
from prsm.errors import UnenforceableSchemaError

MAX_SCHEMA_BYTES = 256 * 1024
"""The most a request's schemas (its answer format's and its tools' parameters) may weigh
as JSON."""
MAX_SCHEMA_DEPTH = 64
"""The deepest a schema may nest objects and arrays."""
COMPILE_SECONDS = 10.0
"""The longest a compilation may take, waiting for a compiler included."""
KEPT = 128
"""Compiled grammars (or refusals) kept, the least recently used dropped first."""

_COMPILERS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="prsm-grammar")
_kept: OrderedDict[str, str | UnenforceableSchemaError | None] = OrderedDict()
_kept_lock = threading.Lock()


async def compiled_grammar(use: ToolUse, text_format: ResponseFormat) -> str | None:
    """The grammar an answer is held to (`prsm.engines.tools.answer_grammar`), compiled off
    the event loop within `COMPILE_SECONDS`, or kept from an earlier compilation; raises
    `UnenforceableSchemaError` for schemas it cannot enforce, too large, too deep or too slow."""
    if not use.tools and not text_format.constrained:
        return None
    key = await asyncio.to_thread(_key, use, text_format)
    with _kept_lock:
        found = _kept.get(key, _kept)
        if found is not _kept:
            _kept.move_to_end(key)
    if found is _kept:
        found = await _compile(use, text_format)
        with _kept_lock:
            _kept[key] = found
            while len(_kept) > KEPT:
                _kept.popitem(last=False)
    if isinstance(found, UnenforceableSchemaError):
        raise found
    assert found is None or isinstance(found, str)
    return found


async def _compile(
    use: ToolUse, text_format: ResponseFormat
) -> str | UnenforceableSchemaError | None:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(COMPILE_SECONDS):
            return await loop.run_in_executor(_COMPILERS, answer_grammar, use, text_format)
    except UnenforceableSchemaError as exc:
        return exc
    except TimeoutError:  # not kept: the same schema may compile in time on a quieter server
        raise UnenforceableSchemaError(
            f"the schema did not compile within {COMPILE_SECONDS:g} s: simplify it"
        ) from None


def _key(use: ToolUse, text_format: ResponseFormat) -> str:
    """The digest of what the grammar is compiled from, once its bounds are checked."""
    for schema in [text_format.schema, *(tool.parameters for tool in use.tools)]:
        if _depth(schema) > MAX_SCHEMA_DEPTH:
            raise UnenforceableSchemaError(
                f"the schema nests deeper than {MAX_SCHEMA_DEPTH} levels"
            )
    tools = [[tool.name, tool.description, tool.parameters] for tool in use.tools]
    parts = [
        text_format.kind,
        text_format.name,
        text_format.schema,
        tools,
        use.choice,
        use.parallel,
    ]
    source = json.dumps(parts, sort_keys=True, default=str)
    if len(source) > MAX_SCHEMA_BYTES:
        raise UnenforceableSchemaError(
            f"the schemas weigh {len(source)} bytes as JSON, more than the "
            f"{MAX_SCHEMA_BYTES} allowed: simplify them"
        )
    return hashlib.sha256(source.encode()).hexdigest()


def _depth(schema: Any) -> int:
    """How deep objects and arrays nest in `schema`, without recursion (a hostile schema may
    nest deeper than Python's stack)."""
    deepest, pending = 0, [(schema, 1)]
    while pending:
        node, depth = pending.pop()
        if depth > MAX_SCHEMA_DEPTH:
            return depth
        if isinstance(node, Mapping):
            children: Any = node.values()
        elif isinstance(node, list | tuple):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        pending.extend((child, depth + 1) for child in children)
    return deepest
