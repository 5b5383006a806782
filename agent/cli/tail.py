"""``mine-agent tail [--url URL] TAG_GLOB...``: live values of selected tags, printed as they change.

Polls the health endpoint's ``/tail`` (the last value per tag the runtime keeps) every ``--interval``
seconds and prints a line for each tag whose sample changed: time, tag, value, quality and, for bad
samples, the reason. Patterns are shell-style: ``crusher.*``, ``*.temp_?``. ``--once`` prints the current
values and exits. Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import quote

from agent.cli.status import DEFAULT_URL, UNREACHABLE, fetch_json

_QUALITY = {0: "good", 1: "uncertain", 2: "BAD"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("tags", nargs="*", metavar="TAG_GLOB", help="tags to show, e.g. 'crusher.*' (default: all)")
    parser.add_argument("--url", default=DEFAULT_URL, help="the agent's health endpoint (default %(default)s)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between polls (default 1)")
    parser.add_argument("--once", action="store_true", help="print the current values once and exit")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the agent")


def format_row(tag: str, row: dict[str, Any]) -> str:
    ts = datetime.fromtimestamp(row["ts_ms"] / 1000, UTC).strftime("%H:%M:%S.%f")[:-3]
    quality = _QUALITY.get(row.get("quality", 0), str(row.get("quality")))
    text = f"{ts}  {tag}  {row.get('value')!r}  {quality}"
    if row.get("reason"):
        text += f"  ({row['reason']})"
    return text


def tail(url: str, patterns: list[str], *, interval: float, once: bool, timeout: float,
         out: TextIO | None = None, polls: int | None = None) -> int:
    out = out or sys.stdout
    path = "/tail?tags=" + quote(",".join(patterns) or "*", safe="*?,[]")
    seen: dict[str, tuple[Any, ...]] = {}
    n = 0
    while True:
        rows = fetch_json(url, path, timeout)
        for tag, row in rows.items():
            key = (row.get("ts_ms"), row.get("value"), row.get("quality"))
            if seen.get(tag) != key:
                seen[tag] = key
                print(format_row(tag, row), file=out, flush=True)
        if once and not rows:
            print(f"no tag matches {' '.join(patterns) or '*'} (yet)", file=sys.stderr)
        n += 1
        if once or (polls is not None and n >= polls):
            return 0
        time.sleep(interval)


def main(args: argparse.Namespace) -> int:
    try:
        return tail(args.url, args.tags, interval=args.interval, once=args.once, timeout=args.timeout)
    except (OSError, ValueError) as exc:
        print(f"mine-agent tail: no answer from {args.url}: {exc}", file=sys.stderr)
        return UNREACHABLE
