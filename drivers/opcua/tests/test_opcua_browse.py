"""`mine-agent browse` against a real server: the tree, and a config fragment that loads."""

from __future__ import annotations

import asyncio
import contextlib
import io
import tomllib
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from agent import cli
from drivers.opcua.config import OpcUaDevice
from drivers.opcua.tests.peer import NAMESPACE, PlcServer, free_port

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def plc(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[PlcServer]:
    server = PlcServer(free_port(), tmp_path_factory.mktemp("server-pki"), n_vars=3)
    await server.start()
    yield server
    await server.stop()


async def browse(*argv: str) -> tuple[int, str]:
    """Run the real CLI in a thread (it runs its own event loop) while the server serves from this one."""
    out = io.StringIO()

    def call() -> int:
        with contextlib.redirect_stdout(out):
            return cli.main(["browse", *argv])

    code = await asyncio.to_thread(call)
    return code, out.getvalue()


async def test_tree_shows_node_ids_types_and_values(plc: PlcServer) -> None:
    """The tree lists each variable with its NodeId, data type and current value."""
    code, text = await browse(plc.url, "--node", f"ns={plc.ns};s=Plc", "--depth", "1")

    assert code == 0
    assert f"v1  ns={plc.ns};s=Plc.v1  Variable  Double = 1.0" in text
    assert f"count  ns={plc.ns};i=1001  Variable  Int32 = 7" in text


async def test_fragment_is_valid_config_with_namespace_uris(plc: PlcServer) -> None:
    """--fragment prints tags with nsu= NodeIds that the config model accepts as they are."""
    code, text = await browse(plc.url, "--fragment", "hoist", "--select", "*Plc*")
    device = tomllib.loads(text)["devices"]["hoist"]

    parsed = OpcUaDevice.model_validate(device)
    assert code == 0
    assert f"nsu={NAMESPACE};s=Plc.v0" in [t.node for t in parsed.tags]
    assert {"v0", "v1", "v2", "count", "running", "mode"} <= {t.name for t in parsed.tags}


async def test_endpoints_lists_every_policy(plc: PlcServer) -> None:
    """--endpoints lists the secure policies the server offers."""
    code, text = await browse(plc.url, "--endpoints")

    assert code == 0
    assert "policy=Aes256Sha256RsaPss  mode=SignAndEncrypt" in text
