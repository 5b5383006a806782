"""The ``mine-backend`` command line: the provincial side's commands.

``receive`` runs the receiver (verify, store, acknowledge, report); ``keys`` manages the backend's keys: the
gateway keys it accepts (each bound to one gateway) and the archive key that signs acknowledgements;
``config push`` signs a configuration with an operator key and sends it to a gateway; ``config keys init``
makes an operator key pair.
"""

from __future__ import annotations

__all__ = ["COMMANDS", "main"]

from collections.abc import Sequence

from agent.core import command_line

COMMANDS: command_line.Commands = {
    "receive": ("backend.cli.receive", "receiver: verify, store, acknowledge and report batches"),
    "keys": ("backend.cli.keys", "gateway keys the receiver accepts (register, rotate, revoke, list, import) "
                                 "and the archive key that signs acks (archive-init, archive-public)"),
    "config": ("backend.cli.config", "remote configuration: push, operator keys"),
}


def main(argv: Sequence[str] | None = None) -> int:
    return command_line.run("mine-backend", "Provincial backend for mine gateways.", COMMANDS, argv)
