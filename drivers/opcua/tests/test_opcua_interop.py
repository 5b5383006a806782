"""Interoperability: the driver against node-opcua, an OPC UA stack other than asyncua.

Needs ``node`` and the npm package ``node-opcua-server``, which ``.ci/run`` or the first run installs with
``npm ci`` from ``interop/package-lock.json`` into a cache directory (``$MINE_AGENT_INTEROP_DIR/opcua`` or
``~/.cache/mine-agent/interop/opcua``) through the ``npm_peer`` fixture of the root conftest.py, as the Modbus
interoperability tests do. Skipped, with the reason, when node, npm or the registry is not available; in CI
(``CI=true`` or ``MINE_AGENT_REQUIRE_INTEROP=1``) they fail instead. node-opcua enforces its OperationLimits
(set to 3 here) and has its own certificate handling, so this checks request splitting and the secure channel
against an independent implementation.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from agent import cli
from agent.core.sample import Quality
from drivers.opcua.pki import Pki, create_client_certificate
from drivers.opcua.tests.helpers import device, running
from drivers.opcua.tests.peer import free_port, wait_for

SERVER_JS = Path(__file__).parent / "interop" / "node_opcua_server.js"


pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.slow,
]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def node_server(
    tmp_path_factory: pytest.TempPathFactory, npm_peer: Callable[[Path, str], Path]
) -> AsyncIterator[str]:
    modules = npm_peer(SERVER_JS.parent, "opcua")
    env = {**os.environ, "NODE_PATH": os.pathsep.join(p for p in (str(modules), os.environ.get("NODE_PATH")) if p)}
    pki = tmp_path_factory.mktemp("node-opcua-pki")
    node = shutil.which("node")
    assert node is not None
    process = await asyncio.create_subprocess_exec(
        node,
        str(SERVER_JS),
        str(free_port()),
        str(pki),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=env,
    )
    assert process.stdout is not None
    try:
        # node-opcua creates its certificate on first start: allow a generous minute on a shared machine.
        async with asyncio.timeout(90):
            while not (line := (await process.stdout.readline()).decode()).startswith("READY"):
                if not line:
                    pytest.fail("node-opcua server exited before it was ready")
        yield line.split()[1]
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_subscribed_and_polled_values_within_enforced_limits(node_server: str) -> None:
    """Eight subscribed and eight polled nodes deliver changing GOOD values under node-opcua's limit of 3."""
    tags = [{"name": f"s{i}", "node": f"ns=1;s=Plc.v{i}", "sampling_interval_s": 0.1} for i in range(8)]
    tags += [{"name": f"p{i}", "path": f"Objects/1:Plc/1:v{i}", "mode": "poll"} for i in range(8)]
    cfg = device(node_server, tags, publishing_interval_s=0.2, poll_interval_s=0.2)
    async with running("n", cfg) as (driver, sink):
        await wait_for(lambda: all(len(sink.of(f"n.{t['name']}")) >= 2 for t in tags), deadline_s=40)
        stats = driver.stats

    assert all(s.quality is Quality.GOOD for s in sink.samples)
    assert (stats.limits.max_nodes_per_read, stats.failed_items) == (3, 0)
    assert sink.of("n.s7")[-1].value > sink.of("n.s7")[0].value  # type: ignore[operator]


async def test_secure_channel_after_trusting_the_rejected_certificate(
    node_server: str, tmp_path: Path
) -> None:
    """Basic256Sha256 SignAndEncrypt to node-opcua: refused until its saved certificate is trusted."""
    pki = Pki(tmp_path / "pki")
    create_client_certificate(pki, "urn:mine-agent:interop", hostname="127.0.0.1")
    security = {"policy": "Basic256Sha256", "mode": "SignAndEncrypt", "pki_dir": str(pki.root)}
    cfg = device(
        node_server, [{"name": "t", "node": "ns=1;s=Plc.v1"}], security=security, reconnect_max_s=1.0
    )
    async with running("n", cfg) as (_, sink):
        await wait_for(lambda: any(pki.rejected.glob("*.der")), deadline_s=40)
        rejected = next(pki.rejected.glob("*.der"))
        assert cli.main(["opcua", "trust", str(rejected), "--pki-dir", str(pki.root)]) == 0
        await wait_for(lambda: sink.has("n.t", quality=Quality.GOOD), deadline_s=40)

    assert any("BadCertificateUntrusted" in (s.reason or "") for s in sink.of("n.t"))
