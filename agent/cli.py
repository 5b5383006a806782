"""The ``mine-agent`` command line.

Each subcommand lives in its own module with ``add_arguments(parser)`` and ``main(args) -> int`` and is
imported only when it is run, so ``mine-agent validate`` does not pay for asyncua or the MQTT stack.
"""

from __future__ import annotations

__all__ = ["main"]

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

from agent.errors import AgentError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("agent.commands.run", "run the agent in the foreground"),
    "demo": ("agent.commands.demo", "start a simulated PLC, a broker, the agent and a receiver"),
    "validate": ("agent.commands.validate", "check a configuration file and print every problem"),
    "config": ("agent.commands.config", "configuration tools: schema, push, keys"),
    "keys": ("agent.commands.keys", "gateway signing keys: init"),
    "receive": ("agent.commands.receive", "reference receiver: verify, store and report batches"),
    "probe": ("drivers.modbus.probe", "read one Modbus value once and print it decoded and raw"),
    "scan": ("drivers.modbus.scan", "list the Modbus unit ids that answer on a bus"),
    "browse": ("drivers.opcua.browse", "print an OPC UA server's address space"),
    "opcua": ("drivers.opcua.commands", "OPC UA tools: cert, trust"),
    "serial": ("drivers.serial.commands", "serial tools: sniff"),
    "status": ("agent.commands.status", "print the running agent's health"),
    "tail": ("agent.commands.tail", "show live values of selected tags"),
    "reload": ("agent.commands.reload", "ask the running agent to reload its configuration"),
}


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


def _available() -> dict[str, tuple[str, str]]:
    return {name: entry for name, entry in COMMANDS.items() if _module_exists(entry[0])}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = _available()
    parser = argparse.ArgumentParser(prog="mine-agent", description="Edge agent for mine gateways.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in commands.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] not in commands:
        parser.parse_args(argv)  # prints usage and exits for unknown or missing commands
        return 2
    name = argv[0]
    module = importlib.import_module(commands[name][0])
    cmd_parser = argparse.ArgumentParser(prog=f"mine-agent {name}", description=commands[name][1])
    module.add_arguments(cmd_parser)
    args = cmd_parser.parse_args(argv[1:])
    try:
        return int(module.main(args))
    except AgentError as exc:
        print(f"mine-agent {name}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
