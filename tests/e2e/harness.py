"""End-to-end harness: a gateway configuration, the agent and the reference receiver as real processes.

The agent runs as ``python -m agent.cli run`` so a test can ``kill -9`` it exactly as a power cut or the
OOM killer would; the receiver runs as ``python -m backend.cli receive`` and its report is read through the
same CLI a backend engineer would use.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.demo.localbroker import free_port
from agent.protocol.signing import generate_key

REPO = Path(__file__).resolve().parents[2]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    e["PYTHONUNBUFFERED"] = "1"
    return e


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


class Gateway:
    """Keys and a TOML config for one gateway under ``root``, and the archive key of the receiver that
    acknowledges to it (``root/archive/archive.key``, as ``mine-backend keys archive-init`` makes it; its
    public line is the gateway's ``archive_keys_file``, so the default ack mode works)."""

    def __init__(self, root: Path, gateway_id: str = "gw-test") -> None:
        self.root = root
        self.id = gateway_id
        self.state = root / "state"
        self.keys = root / "keys"
        self.signer = generate_key(self.keys)
        self.trust_file = root / "trust.pub"
        self.trust_file.write_text(f"{gateway_id} {self.signer.public_text}\n")  # the key registry format
        self.archive_key = archive_key_path(root)
        if not self.archive_key.exists():
            generate_key(self.archive_key.parent, "archive")
        self.archive_keys_file = root / "archive.keys"
        self.archive_keys_file.write_text((self.archive_key.parent / "archive.pub").read_text())
        self.config_path = root / "agent.toml"
        self.health_port = free_port()

    def write_config(
        self,
        *,
        mqtt_port: int,
        devices: str = "",
        window_s: int = 1,
        batch_interval_s: float = 0.2,
        max_bytes: str = "64 MiB",
        mqtt_extra: str = "",
        pipeline_extra: str = "",
        buffer_extra: str = "",
    ) -> Path:
        self.config_path.write_text(f"""
[gateway]
id = "{self.id}"
key_file = "{self.keys / 'gateway.key'}"
state_dir = "{self.state}"

[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
topic_prefix = "mine"
keepalive_s = 5
publish_timeout_s = 3
archive_keys_file = "{self.archive_keys_file}"
{mqtt_extra}

[buffer]
max_bytes = "{max_bytes}"
{buffer_extra}

[pipeline]
window_s = {window_s}
batch_interval_s = {batch_interval_s}
late_grace_s = 0.5
{pipeline_extra}

[health]
listen = "127.0.0.1:{self.health_port}"

{devices}
""")
        return self.config_path

    @property
    def buffer_path(self) -> Path:
        return self.state / "buffer.sqlite"


def modbus_device(name: str, port: int, tags: list[tuple[str, int, str]], *, poll_s: float = 0.2,
                  raw: bool = True) -> str:
    """TOML for a Modbus TCP device on loopback; ``tags`` are (name, address, type)."""
    out = [f"""[devices.{name}]
protocol = "modbus-tcp"
host = "127.0.0.1"
port = {port}
poll_interval_s = {poll_s}
timeout_s = 0.5
"""]
    for tag, address, dtype in tags:
        out.append(f"""[[devices.{name}.tags]]
name = "{tag}"
address = {address}
type = "{dtype}"
raw = {"true" if raw else "false"}
""")
    return "\n".join(out)


class Process:
    """A child process with its output kept in a log file for the failure message."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.args = args
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as f:
            self.proc = subprocess.Popen(self.args, stdout=f, stderr=subprocess.STDOUT, env=env(),
                                         start_new_session=True)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.running():
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)

    def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 10.0) -> float:
        """SIGTERM and wait; returns how long the stop took."""
        t = time.monotonic()
        self.signal(signal.SIGTERM)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
                raise AssertionError(f"{self.args[3:5]} did not stop within {timeout} s:\n{self.tail()}") from None
        return time.monotonic() - t

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


def agent_process(gw: Gateway, log_name: str = "agent.log") -> Process:
    return Process([sys.executable, "-m", "agent.cli", "run", "--config", str(gw.config_path),
                    "--log-format", "json"], gw.root / log_name)


def archive_key_path(root: Path) -> Path:
    """Where the archive key of the test under ``root`` lives (made by :class:`Gateway`)."""
    return root / "archive" / "archive.key"


def receiver_process(root: Path, broker_url: str, trust: Path, *, extra: list[str] | None = None) -> Process:
    """The receiver, signing its acks with the archive key under ``root`` (``extra`` ``["--no-ack"]`` for
    gateways in broker mode)."""
    ack = ["--no-ack"] if "--no-ack" in (extra or []) else ["--archive-key", str(archive_key_path(root))]
    rest = [a for a in (extra or []) if a != "--no-ack"]
    return Process([sys.executable, "-m", "backend.cli", "receive", "--broker", broker_url, "--trust", str(trust),
                    "--db", str(root / "receiver.sqlite"), "--prefix", "mine", *ack, *rest],
                   root / "receiver.log")


def receiver_report(root: Path) -> dict[str, Any]:
    """The receiver's report; empty before the receiver has created its database."""
    if not (root / "receiver.sqlite").exists():
        return {"gateways": {}}
    out = subprocess.run([sys.executable, "-m", "backend.cli", "receive", "--db", str(root / "receiver.sqlite"),
                          "--report"], capture_output=True, env=env(), timeout=60, check=True)
    return json.loads(out.stdout)


class LoopThread:
    """An asyncio loop in a background thread, for peers (simulated PLC, black-hole proxy) that the
    synchronous end-to-end tests drive."""

    def __init__(self) -> None:
        import asyncio
        import threading

        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="e2e-peers", daemon=True)
        self._thread.start()

    def call(self, coro: Any, timeout: float = 30.0) -> Any:
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)


def log_events(log: Path, event: str) -> list[dict[str, Any]]:
    """The JSON log events named ``event`` in an agent log."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and f'"{event}"' in line:
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


def stopped_seq(log: Path) -> int:
    """The last sequence number the agent reported on a clean stop."""
    events = log_events(log, "agent_stopped")
    assert events, "the agent did not log a clean stop"
    return int(events[-1]["seq"])
