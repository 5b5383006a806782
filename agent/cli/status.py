"""``mine-agent status [--url URL] [--json]``: the running agent's health, for a technician at the gateway.

Reads the local health endpoint (``[health] listen``, default 127.0.0.1:9108) and prints, first, whether the
gateway is publishing and if not why (the same words as its retained MQTT status), then devices with their
state and last error, the buffer backlog, drops (and how many still await their declaration), refused
appends and clamped limits, the uplink and the batch sequence number. Exit status follows the
monitoring-plugin convention so scripts can use it: 0 ok, 1 degraded, 2 failing, 3 the agent did not answer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any, TextIO

DEFAULT_URL = os.environ.get("MINE_AGENT_HEALTH_URL", "http://127.0.0.1:9108")
_EXIT = {"ok": 0, "degraded": 1, "failing": 2}
UNREACHABLE = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=DEFAULT_URL,
                        help="the agent's health endpoint (default %(default)s, or $MINE_AGENT_HEALTH_URL)")
    parser.add_argument("--json", action="store_true", help="print the raw JSON health document")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the agent")


def fetch_json(base: str, path: str, timeout: float) -> Any:
    """GET ``base + path`` and decode JSON; a 503 from /health still carries the document."""
    url = base.rstrip("/") + path
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 -- the URL is the operator's
            return json.load(resp)
    except urllib.error.HTTPError as exc:
        if exc.code == 503:
            return json.load(exc)
        raise


def _age(ms: int | None, now_ms: int) -> str:
    if not ms:
        return "never"
    s = max(0, (now_ms - ms) // 1000)
    if s < 120:
        return f"{s} s ago"
    if s < 7200:
        return f"{s // 60} min ago"
    return f"{s // 3600} h ago"


def _size(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return "?"


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip(), file=out)


def render(doc: dict[str, Any], out: TextIO | None = None) -> None:
    """The readable report."""
    out = out or sys.stdout
    now_ms = doc.get("ts_ms") or int(time.time() * 1000)
    print(f"gateway {doc.get('gateway')}: {str(doc.get('status')).upper()}"
          f"   seq {doc.get('seq')}   config {doc.get('config_hash', '?')}", file=out)
    if "publishing" in doc:
        print("  publishing" if doc["publishing"] else f"  NOT PUBLISHING: {doc.get('publishing_reason')}", file=out)
    for reason in doc.get("reasons") or []:
        print(f"  ! {reason}", file=out)
    devices = doc.get("devices") or {}
    print(f"\ndevices ({len(devices)})", file=out)
    if devices:
        rows = [["NAME", "STATE", "POLLS", "ERRORS", "BAD", "LAST POLL", "LAST OK", "LAST ERROR"]]
        for name, d in sorted(devices.items()):
            rows.append([name, "up" if d.get("connected") else "DOWN", str(d.get("polls", 0)),
                         str(d.get("errors", 0)), str(d.get("bad_samples", 0)),
                         f"{(d.get('last_poll_duration_s') or 0) * 1000:.0f} ms", _age(d.get("last_ok_ms"), now_ms),
                         (d.get("last_error") or "-")[:60]])
        _table(rows, out)
    buf = doc.get("buffer")
    print("\nbuffer", file=out)
    if buf:
        oldest = buf.get("oldest_created_ms")
        pending = buf.get("pending_drop_batches") or 0
        undeclared = f" ({pending} not yet declared)" if pending else ""
        print(f"  backlog {buf.get('batches', 0)} batches, {_size(buf.get('bytes'))}, oldest "
              f"{_age(oldest, now_ms) if oldest else '-'}; dropped {buf.get('dropped_batches', 0)} batches"
              f"{undeclared}", file=out)
        if buf.get("condition") or buf.get("refused"):
            print(f"  condition {buf.get('condition') or 'ok'}; refused {buf.get('refused', 0)} appends since start",
                  file=out)
        for note in buf.get("clamped") or []:
            print(f"  limit clamped: {note}", file=out)
    else:
        print(f"  unavailable: {doc.get('buffer_error') or 'not open'}", file=out)
    up = doc.get("uplink")
    print("\nuplink", file=out)
    if up:
        state = "connected" if up.get("connected") else "DISCONNECTED"
        print(f"  {state}; published {up.get('published', 0)}, acked {up.get('acked', 0)}, in flight "
              f"{up.get('inflight', 0)}, timeouts {up.get('publish_timeouts', 0)}, reconnects "
              f"{up.get('reconnects', 0)}", file=out)
        refused = (up.get("bad_backend_acks") or 0, up.get("unverified_acks") or 0)
        if any(refused):
            print(f"  acks ignored: {refused[0]} malformed, {refused[1]} unverified (someone else publishes on "
                  "the ack topic, or archive_keys_file lacks the archive's key)", file=out)
        if up.get("last_error"):
            print(f"  last error: {up['last_error']}", file=out)
    else:
        print("  not running", file=out)
    proc = doc.get("process") or {}
    uptime = doc.get("uptime_s")
    print(f"\nprocess: up {uptime / 3600:.1f} h, " if uptime is not None else "\nprocess: ", end="", file=out)
    print(f"memory {_size(proc.get('rss_bytes'))}, cpu {proc.get('cpu_seconds', 0):.1f} s", file=out)


def main(args: argparse.Namespace) -> int:
    try:
        doc = fetch_json(args.url, "/health", args.timeout)
    except (OSError, ValueError) as exc:
        print(f"mine-agent status: no answer from {args.url}: {exc}\n"
              "  is the agent running? (systemctl status mine-agent) is [health] enabled on that address?",
              file=sys.stderr)
        return UNREACHABLE
    if args.json:
        json.dump(doc, sys.stdout, indent=2)
        print()
    else:
        render(doc)
    return _EXIT.get(str(doc.get("status")), UNREACHABLE)
