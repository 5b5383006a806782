"""``mine-agent config ACTION``: configuration tools on the gateway.

Each action is one entry of ``ACTIONS``: a function that adds its arguments to its own sub-parser and a
function that runs it.

* ``schema``: the JSON Schema of the configuration file, for editors.

Pushing a configuration and the operator's keys are the backend's (``mine-backend config``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agent.core import command_line

__all__ = ["ACTIONS", "add_arguments", "main", "schema_text"]


def schema_text() -> str:
    """The JSON Schema exactly as committed in config/mine-agent.schema.json."""
    from config.schema import json_schema

    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


def _add_schema_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output", "-o", type=Path, metavar="PATH", help="write to PATH instead of standard output"
    )


def _run_schema(args: argparse.Namespace) -> int:
    text = schema_text()
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


ACTIONS: command_line.Actions = {
    "schema": (
        "print the JSON Schema of the configuration file (for editors: Taplo / Even Better TOML)",
        _add_schema_arguments,
        _run_schema,
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    command_line.add_actions(parser, ACTIONS)


def main(args: argparse.Namespace) -> int:
    return command_line.run_action(ACTIONS, args)
