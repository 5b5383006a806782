"""Log event names follow one convention, and the events the documentation names are the ones the code logs.

Every structlog event in product code is named snake_case ``component_event`` (``opcua_session_lost``,
``buffer_evicted``), so a technician can filter the journal by component (``jq 'select(.event |
startswith("uplink_"))'``) and the docs can name events that stay put. The names are read from the source
with ``ast``, not by running the code: most events are logged only on failures a test would have to stage
one by one. A name the scan cannot work out (built at run time, passed in from elsewhere) fails the test,
so every event name stays checkable; a grep-based cross-check makes sure the scan misses no log call.

Rejected: checking names at run time with a structlog processor. It only sees the events a test happens to
trigger, and the rare ones (a quarantined buffer, a chain break) are the ones technicians look up.
"""

from __future__ import annotations

import ast
import functools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("agent", "backend", "buffer", "config", "drivers")
LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}
EVENT_NAME = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)+$")
# The first word of an event name: the part of the agent (or backend) that logs it.
COMPONENTS = {
    "agent", "alarm", "batcher", "buffer", "config", "driver", "health", "modbus", "opcua", "receiver",
    "sd", "serial", "service", "uplink", "watchdog",
}
DOCS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "drivers").glob("*/README.md")))


@dataclass(frozen=True)
class LogCall:
    where: str
    names: tuple[str, ...]  # the event names this call can log; empty if they cannot be worked out
    keys: tuple[str, ...]


def product_files() -> Iterator[Path]:
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "tests" not in path.relative_to(ROOT).parts:
                yield path


def _is_logger_source(node: ast.expr, loggers: set[str]) -> bool:
    """``structlog.get_logger(...)``, or ``<logger>.bind(...)`` / ``.new(...)`` of a known logger."""
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
        return False
    func = node.func
    if func.attr == "get_logger":
        return ast.unparse(func.value) == "structlog"
    return func.attr in ("bind", "new") and ast.unparse(func.value) in loggers


def _loggers(tree: ast.Module) -> set[str]:
    """The expressions (``log``, ``self._log``) bound to structlog loggers anywhere in the module."""
    loggers: set[str] = set()
    while True:
        found = {
            ast.unparse(target)
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign) and _is_logger_source(node.value, loggers)
            for target in node.targets
        }
        if found <= loggers:
            return loggers
        loggers |= found


def _is_level_method(node: ast.expr, loggers: set[str]) -> bool:
    """``log.warning``, or ``log.warning if ... else log.info``: a level chosen before the call."""
    if isinstance(node, ast.IfExp):
        return _is_level_method(node.body, loggers) and _is_level_method(node.orelse, loggers)
    return isinstance(node, ast.Attribute) and node.attr in LEVELS and ast.unparse(node.value) in loggers


def _assignments(scope: ast.AST) -> dict[str, list[ast.expr]]:
    values: dict[str, list[ast.expr]] = {}
    for node in ast.walk(scope):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    values.setdefault(target.id, []).append(node.value)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            values.setdefault(node.target.id, []).append(node.value)
    return values


def _names(node: ast.expr, assigned: dict[str, list[ast.expr]], seen: frozenset[str] = frozenset()) -> list[str]:
    """The literal strings ``node`` can be: a constant, either side of ``a if c else b``, or a local name
    assigned only such values. Empty if any part is not literal."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        body, orelse = _names(node.body, assigned, seen), _names(node.orelse, assigned, seen)
        return body + orelse if body and orelse else []
    if isinstance(node, ast.Name) and node.id in assigned and node.id not in seen:
        out: list[str] = []
        for value in assigned[node.id]:
            names = _names(value, assigned, seen | {node.id})
            if not names:
                return []
            out += names
        return out
    return []


def _scopes(tree: ast.Module) -> Iterator[tuple[ast.AST, ast.Call]]:
    """Each call with its innermost enclosing function (or the module)."""
    def visit(node: ast.AST, scope: ast.AST) -> Iterator[tuple[ast.AST, ast.Call]]:
        for child in ast.iter_child_nodes(node):
            inner = child if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) else scope
            if isinstance(child, ast.Call):
                yield scope, child
            yield from visit(child, inner)
    yield from visit(tree, tree)


def log_calls(path: Path) -> list[LogCall]:
    tree = ast.parse(path.read_text(), filename=str(path))
    loggers = _loggers(tree)
    calls: list[LogCall] = []
    by_scope: dict[int, dict[str, list[ast.expr]]] = {}
    for scope, call in _scopes(tree):
        assigned = by_scope.get(id(scope)) or by_scope.setdefault(id(scope), _assignments(scope))
        func = call.func
        direct = _is_level_method(func, loggers)
        chosen = isinstance(func, ast.Name) and any(
            _is_level_method(value, loggers) for value in assigned.get(func.id, ())
        )
        if not (direct or chosen):
            continue
        event = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "event"), None)
        names = tuple(_names(event, assigned)) if event is not None else ()
        where = f"{path.relative_to(ROOT)}:{call.lineno}"
        calls.append(LogCall(where, names, tuple(k.arg for k in call.keywords if k.arg)))
    return calls


@functools.cache
def all_log_calls() -> tuple[LogCall, ...]:
    return tuple(call for path in product_files() for call in log_calls(path))


def code_events() -> set[str]:
    return {name for call in all_log_calls() for name in call.names}


def test_every_event_name_is_snake_case_component_event() -> None:
    calls = all_log_calls()
    unresolved = [c.where for c in calls if not c.names]
    assert not unresolved, f"event names the scan cannot work out (use a literal or a local literal): {unresolved}"
    bad = sorted(
        f"{c.where}: {name!r}"
        for c in calls
        for name in c.names
        if not EVENT_NAME.match(name) or name.split("_", 1)[0] not in COMPONENTS
    )
    assert not bad, f"event names not snake_case component_event (components: {sorted(COMPONENTS)}): {bad}"


def test_the_scan_sees_every_log_call() -> None:
    """Every line that calls a level method on a logger-like name is a call the scan understood, and the
    indirect forms (name chosen by a conditional, level chosen before the call) are among them."""
    seen = {c.where for c in all_log_calls()}
    pattern = re.compile(r"\b_?log\.(" + "|".join(sorted(LEVELS)) + r")\(")
    missed = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in product_files()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line) and f"{path.relative_to(ROOT)}:{number}" not in seen
    ]
    assert not missed, f"log calls the scan did not recognise: {missed}"
    assert {"opcua_session_lost", "opcua_connect_failed", "opcua_tags_refused", "config_status",
            "receiver_store_failed", "modbus_device_failing"} <= code_events()


def _schema_keys(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                yield from value
            yield from _schema_keys(value)
    elif isinstance(node, list):
        for value in node:
            yield from _schema_keys(value)


def _prose(text: str) -> str:
    """The document without its fenced code blocks (shell sessions, example output, TOML)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)


def _backticked(text: str) -> Iterator[tuple[str, str]]:
    """(identifier, inline code span) for each snake_case identifier inside backticks, leaving out parts
    of paths and file names (``bench/modbus_decode.py``) and metric labels (``mine_agent_info{config_hash}``)."""
    for span in re.findall(r"`([^`\n]+(?:\n[^`\n]+)*)`", _prose(text)):
        for token in re.findall(r"(?<![\w./{])[a-z][a-z0-9_]*(?![\w./}])", span):
            if EVENT_NAME.match(token):
                yield token, span


def documented_events() -> dict[str, set[str]]:
    """Event names the docs mention, by document: ``"event": "x"`` in example log lines, ``event `x```,
    and any backticked ``component_...`` identifier that is neither a configuration key nor a log key."""
    schema = json.loads((ROOT / "config" / "mine-agent.schema.json").read_text())
    not_events = set(_schema_keys(schema)) | {key for call in all_log_calls() for key in call.keys}
    found: dict[str, set[str]] = {}
    for doc in DOCS:
        text = doc.read_text()
        names = set(re.findall(r'"event":\s*"([^"]*)"', text))
        names |= set(re.findall(r"\bevents?\s+`([^`]+)`", _prose(text)))
        names |= {
            token
            for token, _ in _backticked(text)
            if token.split("_", 1)[0] in COMPONENTS and token not in not_events
        }
        found[str(doc.relative_to(ROOT))] = names
    return found


def test_every_documented_event_is_logged_by_the_code() -> None:
    events = code_events()
    missing = {doc: sorted(names - events) for doc, names in documented_events().items() if names - events}
    assert not missing, f"the docs name events the code never logs: {missing}"


def test_troubleshooting_tables_name_real_events() -> None:
    """The tables technicians read first: every event they name exists, and the check above sees them."""
    documented = documented_events()
    in_tables = {
        "drivers/opcua/README.md": {"opcua_tags_refused", "opcua_client_queue_full"},
        "docs/operations.md": {"watchdog_withheld"},
    }
    for doc, names in in_tables.items():
        assert names <= documented[doc]
        assert names <= code_events()
