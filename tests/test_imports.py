"""The package's import graph: the gateway loads neither the API server nor the SDK, `prsm
serve` no SDK client, and no module imports itself back through others."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(node: ast.Import | ast.ImportFrom, known: set[str]) -> set[str]:
    """The prsm modules an import statement loads (a name imported from a package that is a
    module of its own counts as that module)."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name.split(".")[0] == "prsm"}
    base = node.module or ""
    if node.level or base.split(".")[0] != "prsm":
        return set()
    found = {base}
    found |= {f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known}
    return found


def import_graph() -> dict[str, set[str]]:
    """Each module's imports at load time: its top level, not function bodies nor
    `if TYPE_CHECKING:` blocks."""
    paths = {module_name(p): p for p in SRC.rglob("*.py")}
    known = set(paths)
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        edges: set[str] = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                edges |= imported(node, known) & known
        graph[name] = edges - {name}
    return graph


def test_the_gateway_loads_neither_the_api_server_nor_the_sdk() -> None:
    """Importing the gateway (its app and its process) loads no `prsm.server` or
    `prsm.client` module: what both share lives in `prsm.edge` and `prsm.sd`."""
    code = (
        "import sys, prsm.gateway.run, prsm.gateway.app\n"
        "print(sorted(m for m in sys.modules if m.startswith(('prsm.server', 'prsm.client'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_prsm_serve_loads_no_sdk_client_nor_the_decoders_libraries() -> None:
    """`prsm serve` (the CLI and the server) loads none of the SDK's HTTP clients, discovery or
    OAuth libraries, nor numpy: each process of the tests and of a deployment starts faster
    (a fixed-engine server was ready in 2.7 s of CPU, now 2.0)."""
    heavy = ("numpy", "httpx", "dns", "authlib", "prsm.client.service", "prsm.client.oauth")
    code = (
        "import sys, prsm.cli, prsm.server.run\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_no_module_imports_itself_back() -> None:
    """No cycle in the load-time import graph of `prsm`."""
    graph = import_graph()
    state: dict[str, int] = {}  # 1: on the path, 2: done
    cycles: list[list[str]] = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph.get(name, ())):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []
    assert "prsm.gateway.app" in graph  # the graph was read
