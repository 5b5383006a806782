"""The ``mine-backend`` command line: the provincial side's commands.

``receive`` runs the receiver (verify, store, acknowledge, report); ``config push`` signs a configuration with
an operator key and sends it to a gateway; ``config keys init`` makes an operator key pair; ``keys`` manages
the backend's keys (``keys archive-init`` makes the archive key that signs acknowledgements).
"""

from __future__ import annotations

__all__ = ["COMMANDS", "main"]

from collections.abc import Sequence

from agent.core import command_line

COMMANDS: command_line.Commands = {
    "receive": ("backend.cli.receive", "receiver: verify, store, acknowledge and report batches"),
    "config": ("backend.cli.config", "remote configuration: push, operator keys"),
    "keys": ("backend.cli.keys", "the backend's keys: archive-init, archive-public"),
}


def main(argv: Sequence[str] | None = None) -> int:
    return command_line.run("mine-backend", "Provincial backend for mine gateways.", COMMANDS, argv)
