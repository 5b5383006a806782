"""The ``mine-agent`` command line: the gateway's commands.

Each subcommand lives in its own module (in this package, or in its driver's package) and is imported only
when it is run (``agent.core.command_line``). The provincial side's commands (the receiver, configuration
pushes, operator keys) are ``mine-backend``'s.
"""

from __future__ import annotations

__all__ = ["COMMANDS", "main"]

from collections.abc import Sequence

from agent.core import command_line

COMMANDS: command_line.Commands = {
    "run": ("agent.cli.run", "run the agent in the foreground"),
    "demo": ("agent.demo.command", "start a simulated PLC, a broker, the agent and a receiver"),
    "validate": ("agent.cli.validate", "check a configuration file and print every problem"),
    "config": ("agent.cli.config", "configuration tools: schema"),
    "keys": ("agent.cli.keys", "gateway signing keys: init"),
    "probe": ("drivers.modbus.probe", "read one Modbus value once and print it decoded and raw"),
    "scan": ("drivers.modbus.scan", "list the Modbus unit ids that answer on a bus"),
    "browse": ("drivers.opcua.browse", "print an OPC UA server's address space"),
    "opcua": ("drivers.opcua.commands", "OPC UA tools: cert, trust"),
    "serial": ("drivers.serial.commands", "serial tools: sniff"),
    "status": ("agent.cli.status", "print the running agent's health"),
    "tail": ("agent.cli.tail", "show live values of selected tags"),
    "reload": ("agent.cli.reload", "ask the running agent to reload its configuration"),
}


def main(argv: Sequence[str] | None = None) -> int:
    return command_line.run("mine-agent", "Edge agent for mine gateways.", COMMANDS, argv)
