"""One way to run a program made of subcommands, shared by ``mine-agent`` and ``mine-backend``.

Each subcommand lives in its own module with ``add_arguments(parser)`` and ``main(args) -> int`` and is imported
only when it is run, so ``mine-agent validate`` does not pay for asyncua or the MQTT stack. An ``AgentError``
becomes one line on standard error and exit status 1, converted here once for every command.

Rejected: one argparse tree with every subcommand's arguments built up front; it imports every command module
(and their protocol libraries) to print a usage line.
"""

from __future__ import annotations

__all__ = ["Actions", "Commands", "add_actions", "run", "run_action"]

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from agent.core.errors import AgentError

# name -> (module, one-line help)
Commands = dict[str, tuple[str, str]]
# A command with actions (``mine-agent config schema``): action -> (help, add its arguments, run it)
Actions = dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]]


def add_actions(parser: argparse.ArgumentParser, actions: Actions) -> None:
    """One sub-parser per action; the chosen one is ``args.action``."""
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, (help_text, add, _) in actions.items():
        add(sub.add_parser(name, help=help_text, description=help_text))


def run_action(actions: Actions, args: argparse.Namespace) -> int:
    """Run the action ``add_actions`` parsed."""
    return actions[args.action][2](args)


def _module_exists(dotted: str) -> bool:
    """Find a command module on disk without importing its packages (a driver package may import a
    heavy protocol library in its ``__init__``)."""
    top, _, rest = dotted.partition(".")
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        return False
    for location in spec.submodule_search_locations:
        base = Path(location, *rest.split("."))
        if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
            return True
    return False


def available(commands: Commands) -> Commands:
    """The commands whose modules are installed."""
    return {name: entry for name, entry in commands.items() if _module_exists(entry[0])}


def run(prog: str, description: str, commands: Commands, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: the process's arguments), run the chosen command, return its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    present = available(commands)
    parser = argparse.ArgumentParser(prog=prog, description=description)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in present.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] not in present:
        parser.parse_args(argv)  # prints usage and exits for unknown or missing commands
        return 2
    name = argv[0]
    module = importlib.import_module(present[name][0])
    cmd_parser = argparse.ArgumentParser(prog=f"{prog} {name}", description=present[name][1])
    module.add_arguments(cmd_parser)
    args = cmd_parser.parse_args(argv[1:])
    try:
        return int(module.main(args))
    except AgentError as exc:
        print(f"{prog} {name}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
