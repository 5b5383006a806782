"""``mine-agent keys init DIR``: create the gateway's Ed25519 signing key."""

from __future__ import annotations

import argparse
from pathlib import Path

from agent.protocol.signing import generate_key


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    init = sub.add_parser("init", help="write DIR/<name>.key (mode 0600) and DIR/<name>.pub, print the public key")
    init.add_argument("directory", type=Path)
    init.add_argument("--name", default="gateway", help="file name stem (default: gateway)")


def main(args: argparse.Namespace) -> int:
    signer = generate_key(args.directory, args.name)
    print(f"private key: {args.directory / (args.name + '.key')} (mode 0600, keep it on the gateway)")
    print(f"key id:      {signer.kid}")
    print(f"public key:  {signer.public_text}")
    print("Give the public key line to the backend; it goes into the receiver's trust file.")
    return 0
