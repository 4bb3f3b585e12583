"""MkDocs hooks: the reference pages generated from the code, so they cannot drift from it.

`<!-- settings -->` becomes the table of every setting (`prsm.config.Settings`),
`<!-- gateway-config -->` the gateway's YAML (`prsm.gateway.config.GatewayConfig`), and
`<!-- openapi -->` the API's endpoints; `reference/openapi.json` is generated as a page's file.
"""

from __future__ import annotations

import json
from typing import Any

from mkdocs.structure.files import File, Files
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from prsm.config import ENV_NESTED_DELIMITER, ENV_PREFIX, Settings
from prsm.gateway.config import GatewayConfig


def on_page_markdown(markdown: str, **_: Any) -> str:
    """Fill in the generated tables."""
    if "<!-- settings -->" in markdown:
        markdown = markdown.replace("<!-- settings -->", _table(Settings, env=True))
    if "<!-- gateway-config -->" in markdown:
        markdown = markdown.replace("<!-- gateway-config -->", _table(GatewayConfig, env=False))
    if "<!-- openapi -->" in markdown:
        markdown = markdown.replace("<!-- openapi -->", _endpoints(_openapi()))
    return markdown


def on_files(files: Files, config: Any, **_: Any) -> Files:
    """Add `reference/openapi.json`, generated from the app."""
    content = json.dumps(_openapi(), indent=2)
    files.append(File.generated(config, "reference/openapi.json", content=content))
    return files


def _openapi() -> dict[str, Any]:
    from prsm.engines.fixed import FixedEngine
    from prsm.server.app import create_app

    return create_app(Settings(api_keys=[]), engine=FixedEngine()).openapi()


def _table(model: type[BaseModel], *, env: bool) -> str:
    head = "| setting | environment variable | default | what it does |\n|---|---|---|---|"
    if not env:
        head = "| key | default | what it does |\n|---|---|---|"
    return "\n".join([head, *_rows(model, (), env)])


def _rows(model: type[BaseModel], prefix: tuple[str, ...], env: bool) -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        path = (*prefix, name)
        nested = field.annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel) and nested is not model:
            rows.extend(_rows(nested, path, env))
            continue
        key = f"`{'.'.join(path)}`"
        variable = f"`{ENV_PREFIX}{ENV_NESTED_DELIMITER.join(path).upper()}`"
        cells = [key, variable] if env else [key]
        cells += [_default(field), _cell(field.description or "")]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
        return "(host name)" if isinstance(value, str) and value else f"`{_plain(value)}`"
    if field.default is PydanticUndefined:
        return "required"
    if field.default is None:
        return "unset"
    return f"`{_plain(field.default)}`"


def _plain(value: Any) -> str:
    if isinstance(value, BaseModel):
        return "…"
    return _cell(str(value) if not isinstance(value, list | tuple | dict) else json.dumps(value))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _endpoints(schema: dict[str, Any]) -> str:
    rows = ["| method | path | what it does |", "|---|---|---|"]
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            summary = operation.get("summary") or operation.get("description", "").split("\n")[0]
            rows.append(f"| `{method.upper()}` | `{path}` | {_cell(summary)} |")
    return "\n".join(rows)
