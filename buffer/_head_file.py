"""The chain-head state file ``<store>.head``: a second, independent record of how far the chain went.

Why a second copy: the database holds the head in its ``meta`` table, committed with every append. But a
store that is quarantined, restored from an old copy, or loses its WAL tail (power cut with
``sync="normal"``, or flash that ignores flushes) would restart the sequence lower, and a receiver would see
repeated sequence numbers with different content -- indistinguishable from forgery.

Why a *reservation*: replacing a file durably (tmp -> fsync -> rename -> fsync(dir)) costs about 7 ms here
(bench/buffer_append.py), several times the append itself, and far more on SD cards. So the file carries two
numbers: ``seq``, the head at the last write, rewritten after every append *without* fsync (it survives a
process crash, which keeps the page cache, and costs about 1 ms), and ``reserved``, an upper bound on every
seq ever appended, which is made durable *before* the append that would exceed it and then moves
``RESERVE`` ahead. ``boot`` (the kernel's boot id) tells at open whether ``seq`` can be trusted exactly
(same boot: nothing of the page cache was lost) or only ``reserved`` can (the machine restarted).
``clean`` is set by a normal close, which writes durably with ``reserved == seq``.
"""

from __future__ import annotations

__all__ = ["RESERVE", "HeadState", "current_boot_id", "read_head_file", "write_head_file"]

import json
import os
import zlib
from pathlib import Path
from typing import NamedTuple

import structlog

log = structlog.get_logger(__name__)

RESERVE = 100  # seqs reserved per durable write: one ~7 ms write per 100 appends instead of per append


class HeadState(NamedTuple):
    seq: int  # chain head when written
    hash: bytes  # hash of batch ``seq``
    low: int  # lowest seq still stored or pending as a drop when written (head + 1 if none)
    reserved: int  # durable upper bound of every seq ever appended
    boot: str  # kernel boot id when written
    clean: bool  # written by close(): seq is exact and durable


def current_boot_id() -> str:
    """The kernel's boot id ("" where unavailable: then every restart counts as a reboot)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _encode(state: HeadState) -> bytes:
    head = {"seq": state.seq, "hash": state.hash.hex(), "low": state.low, "reserved": state.reserved,
            "boot": state.boot, "clean": state.clean}
    body = json.dumps(head, sort_keys=True)
    return json.dumps({"head": head, "crc": zlib.crc32(body.encode())}, sort_keys=True).encode() + b"\n"


def read_head_file(path: Path) -> HeadState | None:
    """The state in ``path``, or None if missing or unreadable (logged; the database still has a head)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("buffer_head_file_unreadable", path=str(path), error=str(exc))
        return None
    try:
        doc = json.loads(raw)
        head = doc["head"]
        crc_ok = zlib.crc32(json.dumps(head, sort_keys=True).encode()) == doc["crc"]
        state = HeadState(int(head["seq"]), bytes.fromhex(head["hash"]), int(head["low"]),
                          int(head["reserved"]), str(head["boot"]), bool(head["clean"]))
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("buffer_head_file_invalid", path=str(path), error=str(exc))
        return None
    if not crc_ok or state.seq < 0 or len(state.hash) != 32 or state.reserved < state.seq:
        log.warning("buffer_head_file_invalid", path=str(path), error="checksum or range check failed")
        return None
    return state


def write_head_file(path: Path, state: HeadState, *, durable: bool) -> None:
    """Replace ``path`` atomically with ``state``; with ``durable`` the new content survives a power cut.

    Raises OSError (e.g. ENOSPC); the old file is then still intact.
    """
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            os.write(fd, _encode(state))
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    if durable:
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
