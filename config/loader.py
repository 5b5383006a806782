"""Load and validate a gateway configuration: TOML text in, an immutable :class:`AgentConfig` out.

:func:`parse_config` is pure (no file, network or clock access), so the same code validates a file at
startup, ``mine-agent validate`` and a remote configuration push. It either returns a complete, valid
configuration or raises :class:`agent.core.errors.ConfigError` carrying *every* problem found, each with file,
line, key path, the bad value and what is allowed; a configuration is never partly applied.

Validation is strict about types: TOML has real integers, floats, booleans and strings, so ``port = "502"``
or ``raw = 1`` are errors rather than silently converted. The data is validated in pydantic's JSON mode
(strings are accepted for paths and sizes, nothing else is coerced); TOML dates and times, which JSON
lacks, are passed as a table that no setting accepts so they are reported as a wrong type.

Every rule lives in the models (``config.schema`` and the drivers' device models), none here, so the JSON
Schema and the loader cannot disagree about what exists. Rules across keys are model validators: they raise
``agent.core.fields.ConfigValueError`` with ``key=`` so the message points at the line of the offending key.
Rules across sections (a reference from one section to a device or tag of another) belong in a model
validator of ``AgentConfig`` written the same way, with ``key`` relative to the file's root.

Errors are worded by :mod:`config.explain`; lines come from :mod:`config.locate`, which only runs when
there is something to report, so a valid file costs one TOML parse and one validation.
"""

from __future__ import annotations

__all__ = ["load_config", "parse_config"]

import ast
import datetime as dt
import json
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agent.core.errors import ConfigError, ConfigProblem
from config.explain import explain_errors, format_key
from config.locate import locate_keys
from config.schema import AgentConfig

_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_TOML_END = re.compile(r"\s*\(at end of document\)$")
_DECLARED_TWICE = re.compile(r"Cannot declare (\(.*?\)) twice")
# tomllib's wording for the mistakes technicians make most, and what they usually mean.
_SYNTAX_HINTS = {
    "illegal character '\\n'": "a string is not closed: add the closing quote on the same line",
    "cannot overwrite a value": "this key is set twice in the same table",
    "invalid value": 'strings need quotes, e.g. host = "10.0.0.5"',
    "expected '=' after a key": "keys are letters, digits, '_' and '-'; quote others",
}


def load_config(path: Path) -> AgentConfig:
    """Read ``path`` and validate it. An unreadable file raises ConfigError, like an invalid one."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        problem = ConfigProblem(
            str(path), None, "", f"not a UTF-8 text file (byte {exc.start}: {exc.reason})"
        )
        raise ConfigError([problem], path=str(path)) from exc
    except OSError as exc:
        problem = ConfigProblem(str(path), None, "", f"cannot read the file: {exc.strerror or exc}")
        raise ConfigError([problem], path=str(path)) from exc
    return parse_config(text, str(path))


def parse_config(text: str, path: str = "<config>") -> AgentConfig:
    """Validate the TOML ``text`` (named ``path`` in messages) into an AgentConfig, or raise ConfigError."""
    # Windows editors (Notepad) may start a UTF-8 file with a byte order mark, which tomllib refuses.
    text = text.removeprefix("\ufeff")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_syntax_problem(exc, path, text)], path=path) from None
    try:
        return AgentConfig.model_validate_json(json.dumps(data, default=_json_default), strict=True)
    except ValidationError as exc:
        problems = explain_errors(
            exc.errors(include_url=False), data=data, locator=locate_keys(text), file=path, model=AgentConfig
        )
    # Raised outside the except block and without a cause: pydantic's own text would echo secret values.
    raise ConfigError(problems, path=path)


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return {"toml date/time": value.isoformat()}
    raise TypeError(f"cannot represent {type(value).__name__}")


def _syntax_problem(exc: tomllib.TOMLDecodeError, path: str, text: str) -> ConfigProblem:
    message = _DECLARED_TWICE.sub(lambda m: f"cannot declare [{_key_text(m.group(1))}] twice", str(exc))
    hint = next((h for start, h in _SYNTAX_HINTS.items() if message.lower().startswith(start)), None)
    match = _TOML_POSITION.search(message)
    if match:
        line, column = int(match.group(1)), int(match.group(2))
        reason = message[: match.start()]
        return ConfigProblem(path, line, "", _syntax_message(f"column {column}", reason, hint))
    reason = _TOML_END.sub("", message)
    last_line = text.count("\n") + (0 if text.endswith("\n") else 1)
    return ConfigProblem(path, last_line or None, "", _syntax_message("the end of the file", reason, None))


def _syntax_message(where: str, reason: str, hint: str | None) -> str:
    text = f"invalid TOML at {where}: {_first_lower(reason)}"
    return f"{text} ({hint})" if hint else text


def _key_text(tuple_repr: str) -> str:
    try:
        return format_key(ast.literal_eval(tuple_repr))
    except (ValueError, SyntaxError):
        return tuple_repr


def _first_lower(text: str) -> str:
    return text[:1].lower() + text[1:]
