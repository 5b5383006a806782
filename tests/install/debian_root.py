"""A fresh Debian 12 root, booted under a real systemd with systemd-nspawn, for testing the service install.

Why: ``systemd/install.sh`` only does its real work (system user, directories, unit, virtualenv) on a live
system booted by systemd, as root, without DESTDIR. A scratch-root install cannot show that the unit starts,
reports READY, survives its watchdog or stops cleanly. This module gives the on-demand tests a machine that
looks like a gateway just set up by a technician: ``debootstrap`` of bookworm (plus python3, git and sudo,
as on a standard install), booted with ``systemd-nspawn -b --keep-unit`` (``--keep-unit`` because the
machine running the tests need not itself run systemd), with commands run inside through ``nsenter`` with a
clean environment, so nothing of the test machine's own Python or pip settings leaks in.

The debootstrap root is built once and cached (``MINE_AGENT_TEST_CACHE``, default
``/var/cache/mine-agent-test``); each test run works on a copy. debootstrap and apt in the container use the
Debian mirror this machine's apt is configured with (``MINE_AGENT_TEST_MIRROR`` overrides it).

Rejected: a Docker image (no systemd as PID 1 without extra privileges and tricks, and not a registry this
project can reach); a VM (slow, and no image to boot from); ``chroot`` (no systemd, so the unit's READY,
watchdog and sandboxing are never exercised).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

SUITE = "bookworm"
#: What a freshly installed Debian 12 gateway has beyond debootstrap's required/important set: python3
#: (Debian's 3.11, without python3-venv), git to fetch the source, sudo for the technician.
INCLUDE = ("systemd-sysv", "dbus", "python3", "git", "sudo", "ca-certificates")
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def debian_mirror() -> str:
    """The Debian archive URL this machine's apt uses (deb822 ``URIs:`` or one-line ``deb`` entries)."""
    if os.environ.get("MINE_AGENT_TEST_MIRROR"):
        return os.environ["MINE_AGENT_TEST_MIRROR"]
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file() or path.suffix not in ("", ".list", ".sources"):
            continue
        for line in path.read_text(errors="replace").splitlines():
            words = line.split()
            if words[:1] == ["URIs:"]:
                uris = words[1:]
            elif words[:1] == ["deb"]:
                uris = [w for w in words[1:] if "://" in w][:1]
            else:
                continue
            for uri in uris:
                if uri.rstrip("/").endswith("/debian"):
                    return uri
    raise RuntimeError("no Debian mirror in /etc/apt/sources.list*; set MINE_AGENT_TEST_MIRROR")


def cache_dir() -> Path:
    return Path(os.environ.get("MINE_AGENT_TEST_CACHE", "/var/cache/mine-agent-test"))


def base_root(log: Path) -> Path:
    """The cached debootstrap root, built on first use (about a minute and a half, ~500 MB)."""
    mirror = debian_mirror()
    key = hashlib.sha256(f"{SUITE} {mirror} {','.join(INCLUDE)}".encode()).hexdigest()[:12]
    root = cache_dir() / f"{SUITE}-{key}"
    if (root / ".complete").exists():
        return root
    building = root.with_name(root.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    building.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        subprocess.run(["debootstrap", f"--include={','.join(INCLUDE)}", SUITE, str(building), mirror],
                       stdout=out, stderr=subprocess.STDOUT, check=True, timeout=1800)
    (building / ".complete").write_text(f"{SUITE} from {mirror}\n")
    shutil.rmtree(root, ignore_errors=True)
    building.rename(root)
    return root


def copy_root(base: Path, dest: Path) -> Path:
    """A private copy of the cached root for one test run (the cache is never booted)."""
    subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(dest)], check=True, timeout=600)
    (dest / ".complete").unlink()
    return dest


class Transcript:
    """Every command run in the container and its output, in order: the record of what a technician sees."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.write_text("")

    def write(self, text: str) -> None:
        with self.path.open("a") as f:
            f.write(text if text.endswith("\n") else text + "\n")


def abridged(text: str, keep: int = 12) -> str:
    """Long outputs (apt, pip) keep their first and last lines; the rest is counted, not shown."""
    lines = text.splitlines()
    if len(lines) <= 3 * keep:
        return text
    return "\n".join([*lines[:keep], f"[... {len(lines) - 2 * keep} lines ...]", *lines[-keep:]])


class Container:
    """One boot of a Debian root under systemd-nspawn. Commands run inside with :meth:`sh`."""

    def __init__(self, root: Path, name: str, transcript: Transcript, *, private_network: bool) -> None:
        self.root = root
        self.name = name
        self.transcript = transcript
        self.private_network = private_network
        self.console = root.parent / f"{name}.console.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.leader = 0

    def boot(self, timeout: float = 180.0) -> None:
        cmd = ["systemd-nspawn", "-D", str(self.root), "-b", "--keep-unit", "--register=no", "-M", self.name,
               "--console=passive"]
        if self.private_network:
            # Only a loopback inside: the broker, the simulated PLC and the health endpoint are the
            # container's own, and nothing the agent does can reach any other address.
            cmd.append("--private-network")
        self.transcript.write(f"## boot: {shlex.join(cmd)}")
        with self.console.open("ab") as out:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        while not self.leader:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"systemd-nspawn did not start: {self.console.read_text(errors='replace')}")
            with contextlib.suppress(OSError):
                pids = children.read_text().split()
                if pids:
                    self.leader = int(pids[0])
            time.sleep(0.1)
        while True:
            state = self.sh("systemctl is-system-running --wait", check=False, record=False,
                            timeout=max(1.0, deadline - time.monotonic()))
            if state.stdout.strip() in ("running", "degraded"):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"container did not finish booting: {state.stdout} {state.stderr}")
            time.sleep(0.5)
        self.transcript.write(f"## booted: systemctl is-system-running: {state.stdout.strip()}")

    def sh(self, command: str, *, user: str | None = None, check: bool = True, record: bool = True,
           timeout: float = 120.0, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``command`` with /bin/sh inside the container (as root, or as ``user`` in their home), with
        a clean environment. Recorded in the transcript as ``# command`` (root) or ``$ command`` (user)."""
        home = f"/home/{user}" if user else "/root"
        variables = {"PATH": CLEAN_PATH, "HOME": home, "LANG": "C.UTF-8", "TERM": "dumb", **(env or {})}
        inner = ["env", "-i", *(f"{k}={v}" for k, v in variables.items()), "/bin/sh", "-c", f"cd ~ && {command}"]
        if user:
            inner = ["runuser", "-u", user, "--", *inner]
        result = subprocess.run(["nsenter", "-t", str(self.leader), "-a", "--", *inner], capture_output=True,
                                text=True, timeout=timeout, check=False)
        if record:
            prefix = "".join(f"{k}={v} " for k, v in (env or {}).items())
            self.transcript.write(f"{user or 'root'}{'$' if user else '#'} {prefix}{command}")
            for stream in (result.stdout, result.stderr):
                if stream.strip():
                    self.transcript.write(abridged(stream.rstrip("\n")))
            if result.returncode:
                self.transcript.write(f"[exit status {result.returncode}]")
        if check and result.returncode:
            raise AssertionError(f"{command!r} exited {result.returncode}\nstdout:\n{result.stdout}\n"
                                 f"stderr:\n{result.stderr}")
        return result

    def show(self, *properties: str) -> dict[str, str]:
        """``systemctl show -p ...`` of the agent's unit, as a dict."""
        out = self.sh(f"systemctl show -p {','.join(properties)} mine-agent", record=False).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def poweroff(self, timeout: float = 120.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.transcript.write("## poweroff")
        self.sh("systemctl poweroff", check=False, record=False)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)


@contextlib.contextmanager
def booted(root: Path, name: str, transcript: Transcript, *, private_network: bool) -> Iterator[Container]:
    container = Container(root, name, transcript, private_network=private_network)
    try:
        container.boot()
        yield container
    finally:
        try:
            container.poweroff()
        finally:
            container.kill()
