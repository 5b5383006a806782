"""Fixtures shared by every test directory: the npm-installed peers of the interoperability tests.

The Modbus and OPC UA interoperability tests run a server from another implementation (npm ``modbus-serial``,
``node-opcua-server``) under node. The packages, pinned by the package-lock.json in each test's ``interop/``
folder, live in a cache directory (``$MINE_AGENT_INTEROP_DIR`` or ``~/.cache/mine-agent/interop``), installed
by ``.ci/run`` or by the first test that needs them.

When node, npm or the registry is missing, a developer's run skips these tests with the reason, but CI must not:
a skipped interoperability test looks like a passing one in a summary nobody reads. With ``CI=true`` or
``MINE_AGENT_REQUIRE_INTEROP=1`` in the environment the same condition fails the test and says why
(``MINE_AGENT_REQUIRE_INTEROP=0`` lets a CI machine skip them on purpose). This file sits at the root so that
every test directory shares one implementation; rejected: a copy of the helper in each test module, since
copies drift apart.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import pytest

TRUE = frozenset({"1", "true", "yes", "on"})


def interop_required() -> bool:
    """True when an interoperability test that cannot run must fail: CI, unless explicitly told otherwise."""
    explicit = os.environ.get("MINE_AGENT_REQUIRE_INTEROP", "").strip().lower()
    if explicit:
        return explicit in TRUE
    return os.environ.get("CI", "").strip().lower() in TRUE


def interop_unavailable(reason: str) -> NoReturn:
    """Skip the calling test with ``reason``; in CI fail it instead, naming why it could not run."""
    if interop_required():
        pytest.fail(
            f"interoperability test cannot run: {reason} (required because CI=true or MINE_AGENT_REQUIRE_INTEROP=1; "
            "`.ci/run` installs Debian's nodejs and npm and the npm packages)",
            pytrace=False,
        )
    pytest.skip(reason)


def interop_dir() -> Path:
    """The cache directory the npm packages of the interoperability tests are installed under."""
    return Path(os.environ.get("MINE_AGENT_INTEROP_DIR", Path.home() / ".cache" / "mine-agent" / "interop"))


INSTALLED = "node_modules/.package-lock.json"  # npm writes it last, so it marks a completed install


@pytest.fixture(scope="session")
def npm_peer() -> Callable[[Path, str], Path]:
    """``npm_peer(folder, subdir)`` -> node_modules with the packages ``folder/package-lock.json`` pins.

    ``folder`` is a test's ``interop/`` directory (package.json and package-lock.json); its packages are
    installed with ``npm ci`` under ``interop_dir()/subdir`` (``subdir`` may be "") unless the same lock is
    installed there already. The lock pins the whole tree: node-opcua's dependencies float to releases that
    need a newer node than Debian's. When node, npm or the install is not available the test skips, or fails
    in CI (``interop_unavailable``).
    """

    def ensure(folder: Path, subdir: str) -> Path:
        node, npm = shutil.which("node"), shutil.which("npm")
        if node is None or npm is None:
            missing = " and ".join(n for n, p in (("node", node), ("npm", npm)) if p is None)
            interop_unavailable(f"{missing} not installed: cannot run the npm peer of {folder.parent.name}")
        prefix = interop_dir() / subdir if subdir else interop_dir()
        manifests = ("package.json", "package-lock.json")
        if not _installed(folder, prefix, manifests):
            prefix.mkdir(parents=True, exist_ok=True)
            for name in manifests:
                shutil.copyfile(folder / name, prefix / name)
            command = [npm, "ci", "--prefix", str(prefix), "--omit=optional", "--no-audit", "--no-fund"]
            try:
                result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
            except subprocess.TimeoutExpired:
                interop_unavailable(f"npm ci in {prefix} timed out after 300 s")
            if result.returncode != 0 or not _installed(folder, prefix, manifests):
                interop_unavailable(f"npm ci in {prefix} failed: {result.stderr.strip()[-300:]}")
        return prefix / "node_modules"

    return ensure


def _installed(folder: Path, prefix: Path, manifests: tuple[str, ...]) -> bool:
    try:
        same = all((folder / n).read_bytes() == (prefix / n).read_bytes() for n in manifests)
    except OSError:
        return False
    return same and (prefix / INSTALLED).is_file()
