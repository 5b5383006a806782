"""``mine-agent reload --config FILE``: ask the running agent to reload its configuration file, and show the
outcome.

What ``systemctl reload mine-agent`` does (SIGHUP), for a technician at the gateway's console: the pid comes
from ``<state_dir>/agent.pid`` (written by the running agent), and the outcome from
``<state_dir>/config/history.json``, where the agent records every reload and push after its health window.
Exit status: 0 applied (or kept: a pushed configuration stays in force while the file is unchanged),
1 rejected or rolled back, 3 no outcome within ``--timeout``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from agent.core.errors import AgentError, ConfigError
from agent.remote.service import PID_FILE
from agent.remote.state import StateFiles, state_dir_of
from config.loader import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", type=Path, required=True,
                        help="the configuration file the agent runs with (gives its state directory)")
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="the agent's state directory, if FILE cannot be read to find it")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds to wait for the outcome, health window included (default 120)")
    parser.add_argument("--no-wait", action="store_true", help="send the signal and return at once")


def agent_pid(state_dir: Path) -> int:
    """The running agent's pid, checked to be alive and to be a mine-agent process."""
    path = state_dir / PID_FILE
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError) as exc:
        raise AgentError("no running agent found", path=str(path),
                         hint="is the service running with this configuration? (systemctl status mine-agent)") from exc
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError as exc:
        raise AgentError(f"the agent (pid {pid}) is not running", path=str(path),
                         hint="a stale pid file from a crash; start the service") from exc
    if b"agent" not in cmdline:
        raise AgentError(f"pid {pid} is not a mine-agent process", path=str(path))
    return pid


def state_dir_of_config(path: Path) -> Path:
    """The state directory of the file; read leniently, since the file may be the broken edit being reloaded
    (the agent then reports every problem in the outcome)."""
    try:
        return load_config(path).gateway.state_dir
    except ConfigError:
        return state_dir_of(path)


def main(args: argparse.Namespace) -> int:
    state_dir = args.state_dir or state_dir_of_config(args.config)
    pid = agent_pid(state_dir)
    files = StateFiles(state_dir)
    before = len(files.history()), _last(files)
    os.kill(pid, signal.SIGHUP)
    print(f"asked the agent (pid {pid}) to reload {args.config}")
    if args.no_wait:
        return 0
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        entries = files.history()
        fresh = [e for e in entries[-5:] if e.get("source") == "local" and e != before[1]]
        if (len(entries), _last(files)) != before and fresh:
            return _show(fresh[-1])
        time.sleep(0.2)
    print(f"no outcome within {args.timeout:g} s; see the agent's log", file=sys.stderr)
    return 3


def _last(files: StateFiles) -> dict[str, Any] | None:
    entries = files.history()
    return entries[-1] if entries else None


def _show(outcome: dict[str, Any]) -> int:
    print(json.dumps(outcome, indent=2))
    return 0 if outcome.get("state") in ("applied", "kept") else 1
