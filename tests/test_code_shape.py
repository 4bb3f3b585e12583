"""The code stays in small pieces: no function in `src/` is longer than a screen."""

from __future__ import annotations

import ast
from pathlib import Path

import prsm

LONGEST_FUNCTION = 60
"""Lines, docstring included; ruff's complexity and statement limits (pyproject.toml) guard
the rest of a function's shape."""


def _function_lengths() -> dict[str, int]:
    root = Path(prsm.__file__).parent
    lengths = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                name = f"{path.relative_to(root.parent)}:{node.lineno} {node.name}"
                lengths[name] = node.end_lineno - node.lineno + 1
    return lengths


def test_no_function_is_longer_than_a_screen() -> None:
    """Every function and method in src/prsm fits in LONGEST_FUNCTION lines."""
    lengths = _function_lengths()
    assert len(lengths) > 300  # the walk found the package
    too_long = {name: n for name, n in lengths.items() if n > LONGEST_FUNCTION}
    assert too_long == {}
