"""``mine-agent validate FILE [FILE...]``: check configuration files and print every problem.

Reads each file and validates it exactly as the agent would at startup, without touching anything else:
key files, the broker and the devices are not contacted, so it runs anywhere (a laptop, CI) before a file is
copied to a gateway. Exit status: 0 when every file is valid, 1 when a file has problems, 2 when a file
cannot be read.

One check looks at the machine it runs on, when it can: if the buffer's directory (or its nearest existing
parent) is visible, the buffer's limits are fitted to that file system by the rule the agent applies at start
(``buffer.fit_limits``), and each limit the agent would clamp is printed as a warning naming the key and the
file system's size. A warning does not change the exit status: the file is valid, the machine is small.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from agent.core.errors import ConfigError
from config.loader import parse_config
from config.schema import AgentConfig

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_UNREADABLE = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="configuration file(s) to check")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="print only problems, nothing for valid files"
    )


def main(args: argparse.Namespace) -> int:
    status = EXIT_OK
    for path in args.files:
        status = max(status, _validate(path, quiet=args.quiet))
    return status


def _validate(path: Path, *, quiet: bool) -> int:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        print(f"{path}: cannot read the file: {reason}", file=sys.stderr)
        return EXIT_UNREADABLE
    try:
        config = parse_config(text, str(path))
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem)
        print(f"{path}: {_count(len(exc.problems), 'problem')}", file=sys.stderr)
        return EXIT_INVALID
    for warning in buffer_warnings(config):
        print(f"{path}: warning: {warning}")
    if not quiet:
        tags = sum(len(device.tags) for device in config.devices.values())
        devices = len(config.devices)
        print(f"{path}: ok ({_count(devices, 'device')}, {_count(tags, 'tag')})")
        if config.mqtt.ack_mode == "broker":
            print(f"{path}: note: mqtt.ack_mode = \"broker\": batches are deleted on the broker's PUBACK, so "
                  "whatever the broker then loses (a restart without persistence, a crash between its saves) is "
                  "lost for good; the default \"backend\" mode deletes only on the archive's signed ack")
    return EXIT_OK


def buffer_warnings(config: AgentConfig) -> list[str]:
    """What the agent would clamp in ``[buffer]`` on the file system that would hold its buffer, if visible."""
    from buffer import fit_limits  # only here: the rest of validate never needs the buffer package

    directory = config.buffer_path.parent
    while not directory.exists() and directory != directory.parent:
        directory = directory.parent
    try:
        st = os.statvfs(directory)
    except OSError:
        return []
    fit = fit_limits(st.f_blocks * st.f_frsize, max_bytes=int(config.buffer.max_bytes),
                     min_free_bytes=int(config.buffer.min_free_bytes))
    return [f"{note} (file system of {directory}; the agent clamps it at start)" for note in fit.notes]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
