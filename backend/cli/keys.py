"""``mine-backend keys ACTION``: the gateway keys a receiver accepts, in its database's key registry, and the
archive key that signs acknowledgements (its actions live in :mod:`backend.cli.archive_keys`).

Every key belongs to exactly one gateway (docs/protocol.md §4)::

    mine-backend keys register --gateway GW --key 'ed25519:...' --db FILE [--valid-from ISO] [--valid-until ISO]
    mine-backend keys rotate   --gateway GW --key NEW --db FILE [--overlap-until ISO]
    mine-backend keys revoke   --kid KID --reason TEXT --db FILE [--at ISO]
    mine-backend keys list     --db FILE [--gateway GW] [--json]
    mine-backend keys import   FILE --db FILE [--gateway GW]
    mine-backend keys archive-init DIR
    mine-backend keys archive-public --key DIR/archive.key

The registry is a table of the receiver's database, so a running receiver applies a change at its next frame.
``--key`` takes the key line ``mine-agent keys init`` prints, or the ``.pub`` file it wrote.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from agent.core import command_line
from agent.core.errors import AgentError
from backend.cli.archive_keys import ARCHIVE_ACTIONS
from backend.receiver import ReceiverStore
from backend.registry import entry_for, format_entry, format_time, parse_time

__all__ = ["ACTIONS", "add_arguments", "main"]

DEFAULT_OVERLAP_S = 86_400  # how long, by default, a rotated-out key may still sign


def _db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", type=Path, required=True, help="the receiver's SQLite file (mine-backend receive)")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _key_text(value: str) -> str:
    """A key line, or the first key line of a ``.pub`` file."""
    if value.strip().startswith("ed25519:") or not Path(value).is_file():
        return value
    try:
        lines = [ln.split("#", 1)[0].strip() for ln in Path(value).read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise AgentError(f"cannot read the key file: {exc}", path=value) from exc
    keys = [ln for ln in lines if ln]
    if not keys:
        raise AgentError("no key line in this file", path=value, hint="expected 'ed25519:<base64>'")
    return keys[0]


def _open(args: argparse.Namespace) -> ReceiverStore:
    """The database of an existing receiver (registering a key may create one; changing one may not)."""
    if not args.db.is_file():
        raise AgentError("no receiver database here", path=str(args.db),
                         hint="give the --db file of 'mine-backend receive', or register a key first")
    return ReceiverStore(args.db)


def _add_register_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gateway", required=True, help="the gateway id the key speaks for ([gateway] id)")
    parser.add_argument("--key", required=True, help="'ed25519:<base64>' or the gateway's .pub file")
    parser.add_argument("--valid-from", help="ISO 8601: frames created before it are refused (default: none)")
    parser.add_argument("--valid-until", help="ISO 8601: frames created after it are refused (default: none)")
    parser.add_argument("--note", default="", help="free text kept with the key (where, who, ticket)")
    _db(parser)


def _run_register(args: argparse.Namespace) -> int:
    entry = entry_for(args.gateway, _key_text(args.key),
                      valid_from_ms=parse_time(args.valid_from, what="--valid-from") if args.valid_from else 0,
                      valid_until_ms=parse_time(args.valid_until, what="--valid-until") if args.valid_until
                      else None, note=args.note)
    with ReceiverStore(args.db) as store:
        store.registry.register(entry, now_ms=_now_ms())
    print(f"registered key {entry.kid} for gateway {entry.gw} (valid from "
          f"{format_time(entry.valid_from_ms) if entry.valid_from_ms else 'always'} until "
          f"{format_time(entry.valid_until_ms) or 'revoked'})")
    return 0


def _add_rotate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gateway", required=True, help="the gateway switching keys")
    parser.add_argument("--key", required=True, help="the new key: 'ed25519:<base64>' or its .pub file")
    parser.add_argument("--overlap-until", help="ISO 8601: the old keys sign nothing created after it "
                                                "(default: 24 hours from now)")
    _db(parser)


def _run_rotate(args: argparse.Namespace) -> int:
    now = _now_ms()
    until = (parse_time(args.overlap_until, what="--overlap-until") if args.overlap_until
             else now + DEFAULT_OVERLAP_S * 1000)
    new = entry_for(args.gateway, _key_text(args.key))
    with _open(args) as store:
        narrowed = store.registry.rotate(args.gateway, new, overlap_until_ms=until, now_ms=now)
    print(f"registered key {new.kid} for gateway {args.gateway}")
    for e in narrowed:
        print(f"key {e.kid} signs nothing created after {format_time(e.valid_until_ms)}")
    return 0


def _add_revoke_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kid", required=True, help="the key id to revoke ('keys list' shows them)")
    parser.add_argument("--at", help="ISO 8601: refuse what arrives from then on (default: now; a time in the "
                                     "past makes 'receive --audit' name the batches that arrived since)")
    parser.add_argument("--reason", required=True, help="why, kept with the key")
    _db(parser)


def _run_revoke(args: argparse.Namespace) -> int:
    at = parse_time(args.at, what="--at") if args.at else _now_ms()
    with _open(args) as store:
        entry = store.registry.revoke(args.kid, at_ms=at, reason=args.reason)
    print(f"key {entry.kid} of gateway {entry.gw} revoked: frames arriving from "
          f"{format_time(entry.revoked_at_ms)} on are refused")
    return 0


def _add_list_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gateway", help="only this gateway's keys")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of registry file lines")
    _db(parser)


def _run_list(args: argparse.Namespace) -> int:
    now = _now_ms()
    with _open(args) as store:
        entries = store.registry.entries(args.gateway)
    if args.json:
        print(json.dumps([e.as_dict(now) for e in entries], indent=2))
        return 0
    print("# mine-backend key registry: <gw> <key> [from=] [until=] [revoked=]  # note")
    for e in entries:
        print(f"{format_entry(e)}\n#   kid {e.kid}: {e.status(now)}")
    return 0


def _add_import_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, metavar="FILE", help="a registry file, or a version 1 trust file")
    parser.add_argument("--gateway", help="the gateway the bare key lines of a version 1 trust file belong to")
    _db(parser)


def _run_import(args: argparse.Namespace) -> int:
    from backend.cli.receive import import_trust

    with ReceiverStore(args.db) as store:
        result = import_trust(store, args.file, args.gateway)
    print(f"{len(result.added)} key(s) added, {len(result.narrowed)} narrowed, {len(result.unchanged)} unchanged")
    return 0


ACTIONS: command_line.Actions = {
    "register": ("register a gateway's key: it may sign for that gateway only", _add_register_arguments,
                 _run_register),
    "rotate": ("register a gateway's new key and end its old keys' validity after an overlap",
               _add_rotate_arguments, _run_rotate),
    "revoke": ("refuse everything a key signs that arrives from a given time on", _add_revoke_arguments,
               _run_revoke),
    "list": ("print the registry: gateway, key, validity, revocation and status", _add_list_arguments, _run_list),
    "import": ("add the keys of a registry file (or of a version 1 trust file, with --gateway)",
               _add_import_arguments, _run_import),
    **ARCHIVE_ACTIONS,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    command_line.add_actions(parser, ACTIONS)


def main(args: argparse.Namespace) -> int:
    return command_line.run_action(ACTIONS, args)
