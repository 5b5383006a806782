"""Where each key of a TOML document is written: key path -> line number.

``tomllib`` parses TOML into plain dicts and forgets positions, but every configuration error must name the
line a technician has to edit. This module re-reads the same text with a small scanner that understands just
enough TOML to know where keys are:

* table headers ``[a.b]`` and arrays of tables ``[[a.b]]`` (each header gets a running index, nested arrays of
  tables are indexed under their parent's current element, as TOML defines);
* dotted keys ``a.b.c = 1`` and quoted keys ``"a b" = 1`` / ``'a.b' = 1``;
* values are skipped token by token, so ``=``, ``[`` or ``#`` inside strings, multi-line strings and
  multi-line arrays are never mistaken for keys;
* elements of arrays are located at the line where the element starts (``tags[3]``), and keys inside inline
  tables at the line where they are written: for a one-line inline table, the line of the enclosing key.

It runs only on text that ``tomllib`` has already accepted, so it does not validate anything; if it meets
something it does not understand it stops and keeps what it found (a line number is a courtesy, never a reason
to fail). Alternative rejected: a full TOML parser with positions (tomlkit) is another dependency and about
20 times slower than this scanner for the same answer.
"""

from __future__ import annotations

__all__ = ["KeyLocator", "KeyPath", "locate_keys"]

import bisect
import contextlib
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field

KeyPath = tuple[str | int, ...]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_WS = re.compile(r"[ \t]*")
_SCALAR = re.compile(r"[^,\]}\n#]*")
_BASIC_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"')
_LITERAL_STRING = re.compile(r"'[^'\n]*'")


@dataclass(slots=True)
class KeyLocator:
    """Line numbers (1-based) of the keys, tables and array elements of one TOML document."""

    lines: dict[KeyPath, int] = field(default_factory=dict)

    def line_of(self, path: Sequence[str | int]) -> int | None:
        """The line where ``path`` is written, or None when the document does not contain it."""
        return self.lines.get(tuple(path))

    def nearest_line(self, path: Sequence[str | int]) -> int | None:
        """The line of ``path``, else of its closest written ancestor (a key inside an inline table, a default
        the user never wrote); None when not even the top-level key is written."""
        key = tuple(path)
        while key:
            line = self.lines.get(key)
            if line is not None:
                return line
            key = key[:-1]
        return None


def locate_keys(text: str) -> KeyLocator:
    """Scan ``text`` (a document ``tomllib`` accepts) and return where each of its keys is written."""
    scanner = _Scanner(text)
    # Text tomllib would reject, or TOML this scanner does not know: keep what was found so far.
    with contextlib.suppress(IndexError, ValueError):
        scanner.document()
    return KeyLocator(scanner.lines)


class _Scanner:
    """A recursive-descent walk over the text that records positions instead of building values."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.lines: dict[KeyPath, int] = {}
        self._newlines = [i for i, ch in enumerate(text) if ch == "\n"]
        self._array_counts: dict[KeyPath, int] = {}

    # -- positions ----------------------------------------------------------------

    def line(self) -> int:
        return bisect.bisect_left(self._newlines, self.pos) + 1

    def record(self, path: KeyPath, line: int) -> None:
        self.lines.setdefault(path, line)

    # -- document structure ----------------------------------------------------------------

    def document(self) -> None:
        table: KeyPath = ()
        while True:
            self.skip_blank_lines()
            if self.pos >= len(self.text):
                return
            if self.text[self.pos] == "[":
                table = self.header()
            else:
                line = self.line()
                keys = self.key()
                self.record_prefixes(table, keys, line)
                self.expect("=")
                self.value((*table, *keys), line)
            self.end_of_line()

    def header(self) -> KeyPath:
        line = self.line()
        array = self.text.startswith("[[", self.pos)
        self.pos += 2 if array else 1
        keys = self.key()
        self.expect("]]" if array else "]")
        resolved: list[str | int] = []
        for i, name in enumerate(keys):
            resolved.append(name)
            self.record(tuple(resolved), line)
            last = i == len(keys) - 1
            if last and not array:
                self.lines[tuple(resolved)] = line  # the explicit header wins over earlier implicit mentions
            if last and array:
                index = self._array_counts.get(tuple(resolved), 0)
                self._array_counts[tuple(resolved)] = index + 1
                resolved.append(index)
                self.lines[tuple(resolved)] = line
            elif tuple(resolved) in self._array_counts:
                # A sub-table of an array of tables belongs to its current (last) element.
                resolved.append(self._array_counts[tuple(resolved)] - 1)
                self.record(tuple(resolved), line)
        return tuple(resolved)

    def record_prefixes(self, table: KeyPath, keys: KeyPath, line: int) -> None:
        for i in range(1, len(keys) + 1):
            self.record((*table, *keys[:i]), line)

    # -- keys ----------------------------------------------------------------

    def key(self) -> KeyPath:
        parts: list[str | int] = []
        while True:
            self.skip_ws()
            parts.append(self.simple_key())
            self.skip_ws()
            if self.pos < len(self.text) and self.text[self.pos] == ".":
                self.pos += 1
                continue
            return tuple(parts)

    def simple_key(self) -> str:
        ch = self.text[self.pos]
        if ch in "\"'":
            start = self.pos
            self.string()
            raw = self.text[start : self.pos]
            return str(tomllib.loads(f"k = {raw}")["k"])  # decode escapes exactly as tomllib does
        match = _BARE_KEY.match(self.text, self.pos)
        if match is None:
            raise ValueError(f"no key at offset {self.pos}")
        self.pos = match.end()
        return match.group()

    # -- values ----------------------------------------------------------------

    def value(self, path: KeyPath, line: int) -> None:
        self.skip_ws()
        ch = self.text[self.pos]
        if ch in "\"'":
            self.string()
        elif ch == "[":
            self.array(path)
        elif ch == "{":
            self.inline_table(path)
        else:
            self.pos = _end_of(_SCALAR, self.text, self.pos)

    def array(self, path: KeyPath) -> None:
        self.pos += 1  # [
        index = 0
        while True:
            self.skip_blank_lines()
            if self.text[self.pos] == "]":
                self.pos += 1
                return
            line = self.line()
            self.record((*path, index), line)
            self.value((*path, index), line)
            self.skip_blank_lines()
            if self.text[self.pos] == ",":
                self.pos += 1
                index += 1

    def inline_table(self, path: KeyPath) -> None:
        self.pos += 1  # {
        while True:
            self.skip_ws()
            if self.text[self.pos] == "}":
                self.pos += 1
                return
            line = self.line()
            keys = self.key()
            self.record_prefixes(path, keys, line)
            self.expect("=")
            self.value((*path, *keys), line)
            self.skip_ws()
            if self.text[self.pos] == ",":
                self.pos += 1

    def string(self) -> None:
        text = self.text
        quote = text[self.pos]
        basic = quote == '"'
        triple = text.startswith(quote * 3, self.pos)
        if not triple:
            match = (_BASIC_STRING if basic else _LITERAL_STRING).match(text, self.pos)
            if match is None:
                raise ValueError("unterminated single-line string")
            self.pos = match.end()
            return
        delimiter = quote * 3
        self.pos += 3
        while True:
            end = text.find(delimiter, self.pos)
            if end < 0:
                raise ValueError("unterminated multi-line string")
            backslashes = 0
            while basic and text[end - 1 - backslashes] == "\\":
                backslashes += 1
            if backslashes % 2:  # \""" : the first quote is escaped, the string goes on
                self.pos = end + 1
                continue
            self.pos = end + 3
            while self.pos < len(text) and text[self.pos] == quote:  # """a""""" ends with up to 2 quotes
                self.pos += 1
            return

    # -- whitespace and comments ----------------------------------------------------------------

    def skip_ws(self) -> None:
        self.pos = _end_of(_WS, self.text, self.pos)

    def skip_comment(self) -> None:
        if self.pos < len(self.text) and self.text[self.pos] == "#":
            end = self.text.find("\n", self.pos)
            self.pos = len(self.text) if end < 0 else end

    def skip_blank_lines(self) -> None:
        while True:
            self.skip_ws()
            self.skip_comment()
            if self.pos < len(self.text) and self.text[self.pos] in "\r\n":
                self.pos += 1
            else:
                return

    def end_of_line(self) -> None:
        self.skip_ws()
        self.skip_comment()

    def expect(self, token: str) -> None:
        self.skip_ws()
        if not self.text.startswith(token, self.pos):
            raise ValueError(f"expected {token!r} at offset {self.pos}")
        self.pos += len(token)


def _end_of(pattern: re.Pattern[str], text: str, pos: int) -> int:
    """Where ``pattern`` (one that also matches the empty string) stops matching at ``pos``."""
    match = pattern.match(text, pos)
    assert match is not None, "the pattern matches the empty string"
    return match.end()
