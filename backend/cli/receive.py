"""``mine-backend receive``: the reference receiver (see docs/protocol.md).

Modes on one database file::

    mine-backend receive --broker URL --archive-key FILE --db FILE [--trust FILE] [--prefix P]   run until Ctrl-C
    mine-backend receive --db FILE --report                                 JSON accounting per gateway
    mine-backend receive --db FILE --records [--tag T] [--gateway G] [--limit N]   stored rows, JSON lines
    mine-backend receive --db FILE --reverify [--trust FILE]                retry frames refused for their key
    mine-backend receive --db FILE --audit                                  verify every stored batch again

The keys a frame may be signed with are the database's key registry (``mine-backend keys``). ``--trust FILE``
imports a registry file into it first (only adding keys and narrowing, never lifting a revocation), so a
deployment that starts the receiver with its key file keeps working.

The running receiver signs its acks with ``--archive-key`` (made by ``mine-backend keys archive-init``);
``--no-ack`` instead publishes none, for gateways that run with ``ack_mode = "broker"``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path

import structlog

from agent.core.errors import AgentError
from agent.protocol.mqtt import TlsFiles, read_password
from agent.protocol.signing import BatchSigner, load_signer
from backend.receiver import REFUSED_BYTES_PER_GATEWAY, REFUSED_BYTES_TOTAL, Receiver, ReceiverStore
from backend.registry import ImportResult, parse_registry

log = structlog.get_logger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", type=Path, required=True,
                        help="SQLite file of the receiver (created if absent)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--report", action="store_true",
                      help="print the per-gateway accounting as JSON and exit")
    mode.add_argument("--records", action="store_true", help="print stored rows, newest first, as JSON lines")
    mode.add_argument("--reverify", action="store_true",
                      help="check frames refused for their key or signature again against the key registry "
                           "(after importing --trust, if given), store those that pass")
    mode.add_argument("--audit", action="store_true",
                      help="verify every stored batch again (hash, signature, key registry) and print JSON")
    parser.add_argument("--broker", help="mqtt://HOST:PORT or mqtts://HOST:PORT")
    parser.add_argument("--trust", type=Path,
                        help="key registry file ('<gw> ed25519:<base64> [from=..] [until=..] [revoked=..]' per "
                             "line) imported into the database's registry at start; a version 1 trust file "
                             "(bare key lines) needs --gateway")
    parser.add_argument("--prefix", default="mine", help="topic prefix (default: mine)")
    parser.add_argument("--client-id", default="mine-receiver",
                        help="MQTT client id; the broker keeps this session's queue while we are away")
    parser.add_argument("--archive-key", type=Path,
                        help="the archive's private key (mine-backend keys archive-init): signs the acks that "
                             "let gateways delete what this receiver stored; required unless --no-ack")
    parser.add_argument("--no-ack", action="store_true",
                        help="publish no acks (only for gateways in ack_mode = \"broker\")")
    parser.add_argument("--ca", type=Path, help="CA certificate file for mqtts://")
    parser.add_argument("--cert", type=Path, help="client certificate for mutual TLS")
    parser.add_argument("--key", type=Path, help="private key of --cert")
    parser.add_argument("--username", help="MQTT user name")
    parser.add_argument("--password-file", type=Path, help="file whose first line is the MQTT password")
    parser.add_argument("--max-refused-bytes", type=_byte_count, default=REFUSED_BYTES_PER_GATEWAY, metavar="N",
                        help="frames refused for their key or signature are kept whole (for --reverify) up to N "
                             "bytes per gateway, all gateways with no registered key sharing one budget; beyond "
                             f"it, only their first 64 KiB (default {REFUSED_BYTES_PER_GATEWAY >> 20} MiB)")
    parser.add_argument("--max-refused-bytes-total", type=_byte_count, default=REFUSED_BYTES_TOTAL, metavar="N",
                        help="the same budget for all gateways together "
                             f"(default {REFUSED_BYTES_TOTAL >> 30} GiB)")
    parser.add_argument("--tag", help="with --records: only this full tag name, e.g. plc1.ch4")
    parser.add_argument("--gateway", help="with --records: only this gateway; with --trust: the gateway a "
                                          "version 1 trust file's bare keys belong to")
    parser.add_argument("--limit", type=int, default=100, help="with --records: at most N rows (default 100)")


def _byte_count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a byte count (a whole number, 0 or more)")
    return n


def _need(args: argparse.Namespace, *names: str) -> None:
    missing = [f"--{n.replace('_', '-')}" for n in names if getattr(args, n) is None]
    if missing:
        raise AgentError(f"{' and '.join(missing)} required to receive",
                         hint="or use --report / --records to read the database")


def import_trust(store: ReceiverStore, path: Path, gateway: str | None) -> ImportResult:
    """Bring the keys of a registry file (or of a version 1 trust file, for ``gateway``) into the store."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AgentError(f"cannot read the key file: {exc}", path=str(path)) from exc
    result = store.registry.import_entries(parse_registry(text, gateway=gateway, path=str(path)),
                                           now_ms=int(store.clock.time() * 1000))
    log.info("receiver_keys_imported", path=str(path), added=len(result.added), narrowed=len(result.narrowed),
             unchanged=len(result.unchanged))
    return result


def main(args: argparse.Namespace) -> int:
    if (args.report or args.records or args.reverify or args.audit) and not args.db.is_file():
        raise AgentError("no receiver database here", path=str(args.db),
                         hint="give the --db file that 'mine-backend receive --broker ...' writes")
    if args.report:
        with ReceiverStore(args.db) as store:
            json.dump(store.report(), sys.stdout, indent=2)
            print()
        return 0
    if args.records:
        with ReceiverStore(args.db) as store:
            for row in store.records(tag=args.tag, gw=args.gateway, limit=args.limit):
                print(json.dumps(row))
        return 0
    if args.audit:
        with ReceiverStore(args.db) as store:
            audit = store.audit()
        json.dump(audit, sys.stdout, indent=2)
        print()
        return 1 if audit["failed"] else 0
    if args.reverify:
        with ReceiverStore(args.db) as store:
            if args.trust is not None:
                import_trust(store, args.trust, args.gateway)
            results = store.reverify()
        print(json.dumps({"stored": sum(r.status == "stored" for r in results),
                          "duplicate": sum(r.status == "duplicate" for r in results),
                          "rejected": sum(r.status == "rejected" for r in results)}))
        return 0

    _need(args, "broker")
    if not args.prefix or any(c in args.prefix for c in "+# "):
        raise AgentError(f"topic prefix {args.prefix!r} must be non-empty without '+', '#' or spaces",
                         key="--prefix", hint="use the gateways' mqtt.topic_prefix, e.g. mine")
    if (args.cert is None) != (args.key is None):
        raise AgentError("--cert and --key go together", key="--cert/--key")
    tls = TlsFiles(args.ca, args.cert, args.key) if (args.ca or args.cert) else None
    password = read_password(args.password_file) if args.password_file else None
    ack_signer = _archive_signer(args)
    with ReceiverStore(args.db, max_refused_bytes=args.max_refused_bytes,
                       max_refused_bytes_total=args.max_refused_bytes_total) as store:
        if args.trust is not None:
            import_trust(store, args.trust, args.gateway)
        if len(store.registry) == 0:
            raise AgentError("no gateway key is registered, so every batch would be refused", path=str(args.db),
                             hint="register each gateway's key: mine-backend keys register --gateway GW --key "
                                  "'ed25519:...' --db FILE (or give --trust FILE)")
        receiver = Receiver(args.broker, store, prefix=args.prefix, ack_signer=ack_signer,
                            client_id=args.client_id, username=args.username, password=password, tls=tls)
        asyncio.run(_run_until_signalled(receiver))
        stats = receiver.stats
    print(json.dumps({"received": stats.received, "stored": stats.stored, "duplicates": stats.duplicates,
                      "rejected": stats.rejected, "retained_dropped": stats.retained,
                      "acks_published": stats.acks_published}), file=sys.stderr)
    return 0


def _archive_signer(args: argparse.Namespace) -> BatchSigner | None:
    """The archive key that signs acks, or None with ``--no-ack``."""
    if args.no_ack:
        if args.archive_key is not None:
            raise AgentError("--archive-key and --no-ack contradict each other", key="--archive-key",
                             hint="drop --no-ack to acknowledge to gateways in the default ack_mode")
        return None
    if args.archive_key is None:
        raise AgentError("--archive-key FILE is required to acknowledge batches to gateways", key="--archive-key",
                         hint="make the key once with 'mine-backend keys archive-init DIR' and pass DIR/archive.key; "
                              "or --no-ack if every gateway runs with ack_mode = \"broker\"")
    return load_signer(args.archive_key)


async def _run_until_signalled(receiver: Receiver) -> None:
    """Run until SIGINT or SIGTERM, then stop cleanly: a commit in progress finishes first."""
    task = asyncio.create_task(receiver.run(), name="receiver.run")
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        log.info("receiver_stopped", received=receiver.stats.received)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
