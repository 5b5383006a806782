"""``mine-backend config ACTION``: the operator's side of remote configuration.

* ``push``: sign a configuration file with an operator key, publish it to one gateway and wait for its
  outcome (docs/protocol.md §10). With ``--gateway-key`` only statuses signed by that gateway count: exit
  status 0 applied, 1 rejected or rolled back, 3 no outcome in time. Without it the outcome is unverified:
  printed with ``"verified": false``, exit status 4, and the retained push is left on the broker.
* ``keys init DIR``: create an operator key pair (``operator.key``, ``operator.pub``); the ``.pub`` line goes
  into each gateway's ``[remote_config] trust_file``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from agent.core import command_line

if TYPE_CHECKING:
    from agent.protocol.signing import TrustStore

__all__ = ["ACTIONS", "add_arguments", "main"]


def _add_push_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, metavar="FILE", help="the complete TOML configuration to apply")
    parser.add_argument("--gateway", required=True, help="the target gateway's id ([gateway] id)")
    parser.add_argument("--key", type=Path, required=True, help="operator private key (from 'config keys init')")
    parser.add_argument("--gateway-key", metavar="KEY", default=None,
                        help="the gateway's public key, 'ed25519:<base64>' or its .pub file: only statuses signed "
                        "by it are believed, and the retained push is cleared after its final one. Without it "
                        "anyone who can publish on the status topic could forge the outcome: statuses are "
                        "printed marked \"verified\": false, the retained push is NEVER cleared, and an outcome "
                        "exits 4")
    parser.add_argument("--broker", required=True, help="mqtt://HOST:PORT or mqtts://HOST:PORT")
    parser.add_argument("--version", type=_version, default=None,
                        help="version number, 1 to 2**63-1, higher than any this gateway has tried and at most "
                        "its remote_config.max_version_step above the current Unix time (default: the current "
                        "Unix time)")
    parser.add_argument("--prefix", default="mine", help="the gateway's mqtt.topic_prefix (default: mine)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds to wait for the outcome, health window included (default 300)")
    parser.add_argument("--trust", type=Path, default=None,
                        help="also replace the gateway's operator trust list with this file's keys (rotation)")
    parser.add_argument("--username", help="MQTT user name")
    parser.add_argument("--password-file", type=Path, help="file whose first line is the MQTT password")
    parser.add_argument("--ca", type=Path, help="CA certificate file for mqtts://")
    parser.add_argument("--no-check", action="store_true",
                        help="do not validate FILE locally first (the gateway validates it anyway)")


def _version(text: str) -> int:
    from agent.protocol.push import MAX_VERSION

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= MAX_VERSION:
        raise argparse.ArgumentTypeError(f"must be 1 to {MAX_VERSION}, not {value}")
    return value


def _run_push(args: argparse.Namespace) -> int:
    import asyncio
    import time

    from agent.core.errors import AgentError, ConfigError
    from agent.protocol.mqtt import TlsFiles, parse_broker_url, read_password
    from agent.protocol.push import push_id, sign_push
    from agent.protocol.signing import load_signer
    from backend.operator import push_and_wait
    from config.loader import parse_config

    broker = parse_broker_url(args.broker)
    signer = load_signer(args.key)
    gateway_key = _gateway_key(args.gateway_key) if args.gateway_key is not None else None
    try:
        toml = args.file.read_text(encoding="utf-8")
    except OSError as exc:
        raise AgentError(f"cannot read: {exc.strerror}", path=str(args.file)) from exc
    if not args.no_check:
        try:
            parse_config(toml, str(args.file))
        except ConfigError as exc:
            print(f"{args.file} is not a valid configuration; nothing was pushed:\n{exc}", file=sys.stderr)
            return 1
    trust = _trust_lines(args.trust) if args.trust is not None else None
    version = args.version if args.version is not None else int(time.time())
    payload = sign_push(signer, gateway=args.gateway, version=version, toml=toml,
                        issued_ms=int(time.time() * 1000), trust=trust)
    pid = push_id(payload)
    password = read_password(args.password_file) if args.password_file is not None else None
    tls = TlsFiles(ca=args.ca) if args.ca is not None else None
    print(f"pushing version {version} to {args.gateway} (push {pid}, key {signer.kid}, {len(payload)} bytes)",
          file=sys.stderr)

    def show(status: dict[str, object]) -> None:
        print(json.dumps(status), flush=True)

    final = asyncio.run(push_and_wait(broker, payload, prefix=args.prefix, gateway=args.gateway, push=pid,
                                      wait_s=args.timeout, on_status=show, username=args.username,
                                      password=password, tls=tls, gateway_key=gateway_key))
    if final is None:
        print(f"no outcome within {args.timeout:g} s; the push stays on the broker and is applied when the "
              "gateway connects", file=sys.stderr)
        return 3
    if not final["verified"]:
        print(f"outcome {final['state']!r} NOT verified (no --gateway-key): anyone who can publish on the status "
              "topic may have written it; the push stays retained on the broker", file=sys.stderr)
        return 4
    return 0 if final.get("state") == "applied" else 1


def _gateway_key(value: str) -> TrustStore:
    """``--gateway-key``: a public key line, or a file holding one (``#`` comments allowed)."""
    from agent.core.errors import AgentError
    from agent.protocol.signing import TrustStore, parse_public_key

    if value.strip().startswith("ed25519:"):
        return TrustStore({"gateway": parse_public_key(value)[1]})
    store = TrustStore.from_file(Path(value))
    if len(store) != 1:
        raise AgentError(f"a gateway key file holds one public key, this one {len(store)}", path=value,
                         hint="give the gateway's keys/gateway.pub, or 'ed25519:<base64>'")
    return store


def _trust_lines(path: Path) -> list[str]:
    from agent.protocol.signing import TrustStore, format_public_key, parse_public_key

    TrustStore.from_file(path)  # refuses a malformed file with its line number
    lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return [format_public_key(parse_public_key(line)[1]) for line in lines if line]


def _add_keys_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="keys_action", metavar="ACTION", required=True)
    init = sub.add_parser("init", help="create DIR/<name>.key (mode 0600) and DIR/<name>.pub")
    init.add_argument("directory", type=Path, metavar="DIR")
    init.add_argument("--name", default="operator", help="file name stem (default: operator)")


def _run_keys(args: argparse.Namespace) -> int:
    from agent.protocol.signing import generate_key

    signer = generate_key(args.directory, args.name)
    print(f"private key: {args.directory / (args.name + '.key')} (mode 0600, keep it off the gateways)")
    print(f"key id:      {signer.kid}")
    print(f"public key:  {signer.public_text}")
    print("Add the public key line to each gateway's operator trust list: [remote_config] trust_file, by default "
          "<state_dir>/operator.trust (/var/lib/mine-agent/operator.trust).")
    return 0


ACTIONS: command_line.Actions = {
    "push": (
        "sign a configuration with an operator key, push it to a gateway and wait for the outcome",
        _add_push_arguments,
        _run_push,
    ),
    "keys": ("operator keys for remote configuration: init", _add_keys_arguments, _run_keys),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    command_line.add_actions(parser, ACTIONS)


def main(args: argparse.Namespace) -> int:
    return command_line.run_action(ACTIONS, args)
