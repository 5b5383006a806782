"""The architecture is executable: the import contracts hold and no imports go round in a circle.

The contracts (layers, the gateway/backend split, independent drivers) are in pyproject.toml under
``[tool.importlinter]`` and are checked by import-linter's own ``lint-imports``. Cycles are checked here, with
the same import graph (grimp), at every level: between modules, and between the packages they sit in, so a
sub-package cannot lean on the one that uses it even through different modules. Tests are left out; they may
import anything.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agent", "backend", "buffer", "config", "drivers")
NAMESPACES = {name for name in PACKAGES if not (ROOT / name / "__init__.py").exists()}


def _is_test(module: str) -> bool:
    return module == "tests" or ".tests." in module + "." or module.startswith("tests.")


@pytest.fixture(scope="module")
def edges() -> dict[str, set[str]]:
    graph = grimp.build_graph(*PACKAGES)
    product = {m for m in graph.modules if not _is_test(m)}
    return {m: {i for i in graph.find_modules_directly_imported_by(m) if i in product} for m in product}


def strongly_connected(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the groups of nodes that reach each other, larger than one node."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(edges):
        if node not in index:
            visit(node)
    return groups


def _collapsed(edges: Mapping[str, set[str]], depth: int) -> dict[str, set[str]]:
    """The graph between packages ``depth`` names deep (``drivers.modbus`` at 2); imports inside one go.

    ``agent`` is a namespace package (no ``__init__.py``) that holds separate packages, the ground floor and
    the protocol among them, so its packages count one level deeper: at depth 1, ``agent.core`` and
    ``agent.runtime`` are two packages, as ``drivers`` and ``buffer`` are.
    """

    def package(module: str) -> str:
        parts = module.split(".")
        return ".".join(parts[: depth + (parts[0] in NAMESPACES)])

    out: dict[str, set[str]] = {}
    for src, targets in edges.items():
        for dst in targets:
            a, b = package(src), package(dst)
            # A module importing its own package's parts, or a package importing its parent's __init__.
            if a != b and not a.startswith(b + ".") and not b.startswith(a + "."):
                out.setdefault(a, set()).add(b)
    return out


def test_import_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "broken" not in result.stdout.split("Contracts:")[-1].split(",")[0]


def test_no_module_imports_itself_round_a_circle(edges: dict[str, set[str]]) -> None:
    assert strongly_connected(edges) == []


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_no_package_imports_itself_round_a_circle(edges: dict[str, set[str]], depth: int) -> None:
    assert strongly_connected(_collapsed(edges, depth)) == []


def test_agent_is_a_namespace_of_packages() -> None:
    assert {"agent"} == NAMESPACES


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert strongly_connected(graph) == [["a", "b", "c"]]
    modules = {"x.one": {"y.one"}, "y.two": {"x.two"}, "x.two": set(), "y.one": set()}
    assert strongly_connected(_collapsed(modules, 1)) == [["x", "y"]]
    assert strongly_connected(modules) == []
