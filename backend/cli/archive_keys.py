"""``mine-backend keys archive-init DIR`` and ``keys archive-public --key FILE``: the archive key.

The archive key signs the acknowledgements (docs/protocol.md §7) that let a gateway delete batches from its
buffer, so it belongs to the one durable archive, not to any gateway or operator: ``archive-init`` makes it
(``DIR/archive.key``, mode 0600, never overwritten; ``DIR/archive.pub``), the receiver signs with it
(``mine-backend receive --archive-key DIR/archive.key``), and each gateway lists its public line in the file
named by ``[mqtt] archive_keys_file``. ``archive-public`` prints that line again from the private key, so the
line handed to gateways is always the key the receiver really runs with. Rejected: reusing an operator or a
gateway key, which would let a remote-configuration tool or a gateway acknowledge batches.
"""

from __future__ import annotations

__all__ = ["ARCHIVE_ACTIONS"]

import argparse
from pathlib import Path

from agent.core import command_line

ARCHIVE_KEY_NAME = "archive"


def _add_init_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", type=Path, metavar="DIR",
                        help=f"where to write {ARCHIVE_KEY_NAME}.key (mode 0600) and {ARCHIVE_KEY_NAME}.pub")


def _run_init(args: argparse.Namespace) -> int:
    from agent.protocol.signing import generate_key

    signer = generate_key(args.directory, ARCHIVE_KEY_NAME)
    key = args.directory / f"{ARCHIVE_KEY_NAME}.key"
    print(f"private key: {key} (mode 0600; only the receiver reads it: mine-backend receive --archive-key {key})")
    print(f"key id:      {signer.kid}")
    print(f"public key:  {signer.public_text}")
    print("Put the public key line into each gateway's archive keys file, the file named by [mqtt] "
          "archive_keys_file (e.g. /etc/mine-agent/archive.keys): gateways delete a batch only on an ack "
          "signed by this key.")
    return 0


def _add_public_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key", type=Path, required=True, metavar="FILE",
                        help=f"the archive's private key ({ARCHIVE_KEY_NAME}.key from 'keys archive-init')")


def _run_public(args: argparse.Namespace) -> int:
    from agent.protocol.signing import load_signer

    print(load_signer(args.key).public_text)
    return 0


ARCHIVE_ACTIONS: command_line.Actions = {
    "archive-init": ("create the archive key that signs acknowledgements to gateways",
                     _add_init_arguments, _run_init),
    "archive-public": ("print the archive's public key line for gateways' [mqtt] archive_keys_file",
                       _add_public_arguments, _run_public),
}
