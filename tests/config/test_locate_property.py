"""Property test of the key locator: for any document a renderer writes (tables, arrays of tables, quoted
keys, tricky strings, multi-line strings and arrays), the locator finds every key on the line the renderer
put it on. The renderer records those lines as it writes, so it is the oracle; tomllib checks the renderer."""

from __future__ import annotations

import json
import tomllib
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from config.locate import KeyPath, locate_keys

KEYS = st.one_of(
    st.text("abcxyz_-0", min_size=1, max_size=5),
    st.text("ab .=#[]\"'", min_size=1, max_size=5),  # needs quotes
)
TEXT = st.text("ab =#[]{}\"'\\,\n", max_size=12)
SCALARS = st.one_of(st.integers(-5, 5), st.booleans(), TEXT)
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3))


def _tables(depth: int) -> st.SearchStrategy[dict[str, Any]]:
    leaf = st.dictionaries(KEYS, VALUES, max_size=4)
    if depth == 0:
        return leaf
    child = _tables(depth - 1)
    return st.builds(
        lambda scalars, subs, arrays: {**scalars, **subs, **arrays},
        leaf,
        st.dictionaries(KEYS, child, max_size=2),
        st.dictionaries(KEYS, st.lists(child, min_size=1, max_size=2), max_size=2),
    )


def _key(name: str) -> str:
    bare = name and all(c.isalnum() or c in "_-" for c in name)
    return name if bare else json.dumps(name)


class _Renderer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.expected: dict[KeyPath, int] = {}

    def scalar(self, value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str) and "\n" in value:
            return '"""\n' + value.replace("\\", "\\\\").replace('"', '\\"') + '"""'
        return json.dumps(value, ensure_ascii=False)

    def table(self, path: KeyPath, table: dict[str, Any]) -> None:
        nested = {k: v for k, v in table.items() if isinstance(v, dict) or _is_array_of_tables(v)}
        for name, value in table.items():
            if name in nested:
                continue
            start = len(self.lines) + 1
            self.expected[(*path, name)] = start
            if isinstance(value, list) and value and start % 2:  # some arrays one element per line
                self.lines.append(f"{_key(name)} = [")
                for i, item in enumerate(value):
                    self.expected[(*path, name, i)] = len(self.lines) + 1
                    self.lines.extend(f"  {self.scalar(item)}, # [x]".split("\n"))
                self.lines.append("]")
            else:
                text = "[" + ", ".join(map(self.scalar, value)) + "]" if isinstance(value, list) else self.scalar(value)
                self.lines.extend(f"{_key(name)} = {text}".split("\n"))
        for name, value in nested.items():
            header = ".".join(_key(str(p)) for p in (*path, name) if isinstance(p, str))
            if isinstance(value, dict):
                self.expected[(*path, name)] = len(self.lines) + 1
                self.lines.append(f"[{header}]")
                self.table((*path, name), value)
            else:
                for i, item in enumerate(value):
                    self.expected[(*path, name, i)] = len(self.lines) + 1
                    self.lines.append(f"[[{header}]]")
                    self.table((*path, name, i), item)


def _is_array_of_tables(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


@settings(max_examples=50, deadline=None)
@given(_tables(2))
def test_every_rendered_key_is_located_on_its_line(data: dict[str, Any]) -> None:
    """Each key, table header, array-of-tables entry and array element is found on the line it was written."""
    renderer = _Renderer()
    renderer.table((), data)
    text = "\n".join(renderer.lines) + "\n"
    assert tomllib.loads(text) == data  # the renderer wrote what it meant to

    located = locate_keys(text)

    assert {path: located.line_of(path) for path in renderer.expected} == renderer.expected
