"""Turn pydantic validation errors into messages a field technician can act on.

One problem per line, always in the same shape::

    <file>:<line>: <key.path>: <what is wrong> (got <value>; allowed: <what>)

pydantic reports *where* in the data (``loc``) and an error *type*; this module adds what pydantic does not
know: the line (from :mod:`config.locate`), the value as it was written in TOML (``true``, not ``True``), and
what is allowed, read from the schema itself (the keys of the table, the range of the field, the members
of a Literal, the protocols of the device union). Values of secret fields (``SecretStr``, or any key whose
name says password/secret/token) are never echoed, and neither are values of unknown keys (a mistyped
``passwrd = ...`` is still a password).
"""

from __future__ import annotations

__all__ = ["explain_errors", "format_key", "show_value"]

import datetime as dt
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, get_args, get_origin

import annotated_types
from pydantic import BaseModel, SecretBytes, SecretStr
from pydantic.dataclasses import is_pydantic_dataclass
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from agent.core.errors import ConfigProblem
from agent.core.fields import PATTERN_HELP, ConfigValueError
from config.locate import KeyLocator, KeyPath

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_SECRET_NAME = re.compile(r"pass|secret|token", re.IGNORECASE)
_MAX_SHOWN = 60

_TYPE_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string in quotes",
    "list_type": "an array",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
    "path_type": "a file path in quotes",
}
_RANGE_TYPES = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal"})


def explain_errors(
    errors: Iterable[ErrorDetails],
    *,
    data: Mapping[str, Any],
    locator: KeyLocator,
    file: str,
    model: type[BaseModel],
) -> list[ConfigProblem]:
    """One ConfigProblem per pydantic error, deduplicated and in file order: by line, then, for keys on one
    line (an inline table), in the order they are written."""
    ordered: list[tuple[int, tuple[int, ...], ConfigProblem]] = []
    for error in errors:
        explainer = _Explainer(error, data, locator, file, model)
        problem = explainer.problem()
        if all(problem != p for _, _, p in ordered):
            ordered.append((problem.line or 0, _written_order(data, explainer.path), problem))
    ordered.sort(key=lambda item: item[:2])
    return [problem for _, _, problem in ordered]


def _written_order(data: Mapping[str, Any], path: Sequence[str | int]) -> tuple[int, ...]:
    """Where each step of ``path`` comes in its table or array as written (TOML keeps the file's order);
    a key that is not in the file (a missing one) comes after those that are."""
    order: list[int] = []
    node: Any = data
    for part in path:
        if isinstance(node, Mapping) and part in node:
            order.append(list(node).index(part))
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            order.append(part)
            node = node[part]
        else:
            order.append(1 << 30)
            break
    return tuple(order)


def format_key(path: Sequence[str | int]) -> str:
    """``("devices", "plc 1", "tags", 3, "address")`` -> ``devices."plc 1".tags[3].address``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            name = (
                part if _BARE_KEY.match(part) else '"' + part.replace("\\", "\\\\").replace('"', '\\"') + '"'
            )
            text += f".{name}" if text else name
    return text


def show_value(value: Any) -> str:
    """A value as a technician wrote it in TOML, shortened when long."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return repr(value if len(value) <= _MAX_SHOWN else value[: _MAX_SHOWN - 3] + "...")
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        shown = "[" + ", ".join(show_value(v) for v in value) + "]"
        return shown if len(shown) <= _MAX_SHOWN else f"an array of {len(value)} items"
    return repr(value)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return "a date/time"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


_MISSING = object()


class _Explainer:
    """Explains one error; a class only to share the looked-up context between the wording rules."""

    def __init__(
        self,
        error: ErrorDetails,
        data: Mapping[str, Any],
        locator: KeyLocator,
        file: str,
        model: type[BaseModel],
    ) -> None:
        self.error = error
        # A dataclass (tags) reports an unknown key as an unexpected keyword argument; same mistake.
        self.type = "extra_forbidden" if error["type"] == "unexpected_keyword_argument" else error["type"]
        self.ctx: dict[str, Any] = dict(error.get("ctx") or {})
        self.data = data
        self.locator = locator
        self.file = file
        self.model = model
        self.path, self.names_key = self._data_path(error["loc"])

    # -- where ----------------------------------------------------------------

    def _data_path(self, loc: Sequence[str | int]) -> tuple[KeyPath, bool]:
        """Map pydantic's ``loc`` onto the TOML data: drop the union member labels (``'modbus-tcp'``) that
        pydantic inserts, keep a final missing key, and note ``[key]`` (the table key itself is invalid)."""
        path: list[str | int] = []
        node: Any = self.data
        for i, part in enumerate(loc):
            if part == "[key]":
                return tuple(path), True
            in_table = isinstance(node, Mapping) and part in node
            in_array = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
            if in_table or in_array:
                path.append(part)
                node = node[part]
            elif i == len(loc) - 1 and self.type in {"missing", "extra_forbidden"}:
                path.append(part)
            # else: a label pydantic inserts for a union member ('modbus-tcp'); not part of the TOML path
        error = self.ctx.get("error")
        if isinstance(error, ConfigValueError):
            path.extend(error.key)
        return tuple(path), False

    def _value(self, path: KeyPath | None = None) -> Any:
        node: Any = self.data
        for part in self.path if path is None else path:
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                return self.error.get("input", _MISSING)
        return node

    # -- the schema at a data path ----------------------------------------------------------------

    def _schema_at(self, path: KeyPath) -> tuple[Any, FieldInfo | None]:
        """The (unwrapped) type expected at ``path`` and the FieldInfo of the last model field on the way."""
        tp: Any = self.model
        info: FieldInfo | None = None
        node: Any = self.data
        for part in path:
            tp = _unwrap(tp, node)
            if _is_model(tp):
                info = _fields(tp).get(str(part))
                if info is None:
                    return None, None
                tp = info.annotation
            elif get_origin(tp) in (dict, Mapping):
                tp, info = get_args(tp)[1], None
            elif get_origin(tp) in (list, Sequence):
                tp, info = get_args(tp)[0], None
            else:
                return None, None
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                node = None
        return _unwrap(tp, node), info

    def _is_secret(self, path: KeyPath) -> bool:
        if any(isinstance(p, str) and _SECRET_NAME.search(p) for p in path):
            return True
        tp, info = self._schema_at(path)
        annotation = info.annotation if info is not None else tp
        return any(t in (SecretStr, SecretBytes) for t in _flatten(annotation))

    def _got(self, path: KeyPath | None = None) -> str:
        path = self.path if path is None else path
        if self._is_secret(path):
            return "***"
        value = self._value(path)
        return "nothing" if value is _MISSING else show_value(value)

    # -- the message ----------------------------------------------------------------

    def problem(self) -> ConfigProblem:
        key, line, message = self._explain()
        return ConfigProblem(self.file, line, format_key(key), message)

    def _explain(self) -> tuple[KeyPath, int | None, str]:
        path, kind = self.path, self.type
        line = self.locator.nearest_line(path)
        if self.names_key:
            return path, line, self._with("invalid name", show_value(path[-1]), self._pattern_help())
        if kind == "missing":
            return self._missing()
        if kind == "extra_forbidden":
            return path, line, self._unknown_key()
        if kind in ("union_tag_invalid", "union_tag_not_found"):
            return self._union_tag()
        if kind in _TYPE_EXPECTED:
            value = self._value()
            shown = show_value(value)
            got = shown if shown.startswith(("a ", "an ")) else f"{shown}, {_kind(value)}"
            got = "***" if self._is_secret(path) else got
            return path, line, self._with("wrong type", got, self._expected_type())
        if kind in _RANGE_TYPES:
            return path, line, self._with("out of range", self._got(), self._range())
        if kind == "finite_number":
            return (
                path,
                line,
                self._with("not a finite number", self._got(), self._range() or "a finite number"),
            )
        if kind in ("literal_error", "enum"):
            return (
                path,
                line,
                self._with("not one of the allowed values", self._got(), self._literal_values()),
            )
        if kind == "string_pattern_mismatch":
            return path, line, self._with("invalid value", self._got(), self._pattern_help())
        if kind in ("string_too_short", "string_too_long", "too_short", "too_long"):
            return path, line, self._length()
        if kind in ("byte_size", "byte_size_unit"):
            allowed = "a number of bytes, or a number and a unit such as '512 MiB' or '2 GiB'"
            return path, line, self._with("not a size", self._got(), allowed)
        if kind in ("value_error", "assertion_error"):
            return path, self.locator.nearest_line(path), self._validator_message()
        return path, line, self._with(_first_lower(self.error["msg"]), self._got(), None)

    @staticmethod
    def _with(what: str, got: str | None, allowed: str | None) -> str:
        details = [f"got {got}"] if got is not None else []
        if allowed:
            details.append(f"allowed: {allowed}")
        return f"{what} ({'; '.join(details)})" if details else what

    def _missing(self) -> tuple[KeyPath, int | None, str]:
        parent, name = self.path[:-1], self.path[-1]
        line = self.locator.line_of(parent) if parent else None
        tp, _ = self._schema_at(self.path)
        if _is_model(tp):
            return parent, line, f"missing required table [{format_key(self.path)}]"
        if get_origin(tp) is list and _is_model(_unwrap(get_args(tp)[0], None)):
            headers = f"[[{format_key(self.path)}]]"
            return parent, line, f"missing required key '{name}' (allowed: one or more {headers} tables)"
        return parent, line, f"missing required key '{name}'"

    def _unknown_key(self) -> str:
        what = "unknown key (typo, or not supported in this version"
        parent_type, _ = self._schema_at(self.path[:-1])
        if _is_model(parent_type):
            return f"{what}; allowed here: {', '.join(_fields(parent_type))})"
        return what + ")"

    def _union_tag(self) -> tuple[KeyPath, int | None, str]:
        discriminator = str(self.ctx.get("discriminator", "'protocol'")).strip("'\"")
        allowed = self.ctx.get("expected_tags") or self._union_tags(discriminator)
        key = (*self.path, discriminator)
        if self.type == "union_tag_invalid":
            got = show_value(self.ctx.get("tag"))
            return key, self.locator.nearest_line(key), self._with(f"unknown {discriminator}", got, allowed)
        value = self._value()
        line = self.locator.line_of(self.path)
        if isinstance(value, Mapping) and value and all(_is_table_like(v) for v in value.values()):
            # Only sub-tables such as [[devices.plc_1.tags]] name this entry: the name is mistyped in their
            # headers, or the entry's own table was forgotten.
            first = next(iter(value))
            header = format_key((*self.path, first))
            header = f"[[{header}]]" if isinstance(value[first], list) else f"[{header}]"
            siblings = self._value(self.path[:-1])
            defined = [
                show_value(name)
                for name, entry in (siblings.items() if isinstance(siblings, Mapping) else ())
                if isinstance(entry, Mapping) and discriminator in entry
            ]
            allowed = ", ".join([*defined, f"or define [{format_key(self.path)}] with its {discriminator}"])
            what = f"missing device: {header} belongs to no defined device"
            return self.path, line, self._with(what, show_value(self.path[-1]), allowed)
        return self.path, line, f"missing required key {discriminator!r} (allowed: {allowed})"

    def _union_tags(self, discriminator: str) -> str:
        tp, info = self._schema_at(self.path)
        annotation = info.annotation if info is not None else tp
        tags = []
        for member in _flatten(annotation):
            if _is_model(member) and discriminator in _fields(member):
                tags.extend(_literal_members(_fields(member)[discriminator].annotation))
        return ", ".join(repr(t) for t in tags)

    def _expected_type(self) -> str:
        expected = _TYPE_EXPECTED[self.type]
        tp, _ = self._schema_at(self.path)
        if self.type == "list_type" and get_origin(tp) is list and _is_model(_unwrap(get_args(tp)[0], None)):
            return f"an array of tables, written [[{format_key(self.path)}]] with double brackets"
        bounds = self._range()
        return f"{expected}, {bounds}" if bounds else expected

    def _range(self) -> str | None:
        _, info = self._schema_at(self.path)
        bounds: dict[str, Any] = {}
        for item in info.metadata if info is not None else []:
            for name in ("ge", "gt", "le", "lt"):
                if isinstance(item, annotated_types.BaseMetadata) and hasattr(item, name):
                    bounds[name] = getattr(item, name)
        if not bounds:
            bounds = {k: v for k, v in self.ctx.items() if k in ("ge", "gt", "le", "lt")}
        if not bounds:
            return None
        if set(bounds) == {"ge", "le"}:
            return f"{bounds['ge']}-{bounds['le']}"
        words = {"ge": "at least", "gt": "more than", "le": "at most", "lt": "less than"}
        return " and ".join(f"{words[k]} {bounds[k]}" for k in ("gt", "ge", "lt", "le") if k in bounds)

    def _literal_values(self) -> str:
        tp, _ = self._schema_at(self.path)
        members = _literal_members(tp)
        if members:
            return ", ".join(repr(m) for m in members)
        return str(self.ctx.get("expected", "")).replace(" or ", ", ")

    def _pattern_help(self) -> str:
        pattern = str(self.ctx.get("pattern", ""))
        return PATTERN_HELP.get(pattern, f"text matching the regular expression {pattern}")

    def _length(self) -> str:
        value = self._value()
        is_text = self.type.startswith("string")
        bound = self.ctx.get("min_length", self.ctx.get("max_length"))
        unit = ("character" if is_text else "item") + ("" if bound == 1 else "s")
        if "min_length" in self.ctx:
            limit, what = f"at least {bound}", "too short"
        else:
            limit, what = f"at most {bound}", "too long"
        if is_text and value == "":
            return self._with("empty", "''", f"{limit} {unit}")
        count = len(value) if isinstance(value, str | list | Mapping) else self.ctx.get("actual_length")
        counted = f"{count} {unit.rstrip('s')}{'' if count == 1 else 's'}"
        # A short text is shown (it is short); a long one or a secret only by its length.
        shown_as_text = is_text and what == "too short" and not self._is_secret(self.path)
        return self._with(what, self._got() if shown_as_text else counted, f"{limit} {unit}")

    def _validator_message(self) -> str:
        error = self.ctx.get("error")
        if isinstance(error, ConfigValueError):
            got = "***" if error.got is not None and self._is_secret(self.path) else error.got
            return self._with(error.message, got, error.allowed)
        text = str(error) if error is not None else self.error["msg"]
        return re.sub(r"^(Value error|Assertion failed), ", "", text)


def _first_lower(text: str) -> str:
    return text[:1].lower() + text[1:]


def _is_model(tp: Any) -> bool:
    """A table in the schema: a model, or a pydantic dataclass (used for tags, see agent.core.fields.STRICT)."""
    return isinstance(tp, type) and (issubclass(tp, BaseModel) or is_pydantic_dataclass(tp))


def _fields(tp: type[Any]) -> dict[str, FieldInfo]:
    """The fields of a model or a pydantic dataclass, by name."""
    fields: dict[str, FieldInfo] = tp.model_fields if issubclass(tp, BaseModel) else tp.__pydantic_fields__
    return fields


def _is_table_like(value: Any) -> bool:
    return isinstance(value, Mapping) or (
        isinstance(value, list) and all(isinstance(v, Mapping) for v in value)
    )


def _flatten(tp: Any) -> list[Any]:
    """Every concrete type inside Annotated / Optional / Union."""
    if get_origin(tp) is typing.Annotated:
        return _flatten(get_args(tp)[0])
    if get_origin(tp) in (typing.Union, types.UnionType):
        return [t for arg in get_args(tp) for t in _flatten(arg)]
    return [tp]


def _literal_members(tp: Any) -> list[Any]:
    return [m for t in _flatten(tp) if get_origin(t) is Literal for m in get_args(t)]


def _unwrap(tp: Any, node: Any) -> Any:
    """Strip Annotated and Optional; pick the member of a union of models that the data's literal field (the
    discriminator, e.g. ``protocol``) selects."""
    members = [t for t in _flatten(tp) if t is not type(None)]
    if len(members) == 1:
        return members[0]
    if isinstance(node, Mapping):
        for member in members:
            if _is_model(member) and any(
                name in node and node[name] in _literal_members(field.annotation)
                for name, field in _fields(member).items()
            ):
                return member
    return tp
