"""The health endpoint of a running agent: /metrics parsed by prometheus-client, /health, /tail, status."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from agent.cli import status, tail
from agent.protocol.signing import BatchSigner
from agent.runtime import Agent
from agent.service.health import LivenessPolicy
from tests.service.conftest import NotifyReceiver, running

RELAXED = LivenessPolicy(buffer_timeout_s=0.5)


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


async def get(url: str) -> tuple[int, str, bytes]:
    """An HTTP GET from a thread: the agent serves it on this test's event loop."""
    return await asyncio.to_thread(_get, url)


@pytest.fixture
async def served(tmp_path: Path, signer: BatchSigner,
                 notify_receiver: NotifyReceiver) -> AsyncIterator[tuple[Agent, str]]:
    """A running agent (2 devices x 3 tags) and its endpoint's base URL, once a batch went through."""
    with structlog.testing.capture_logs() as logs:
        # Production thresholds, so a loaded test machine cannot make a healthy agent look stuck; only
        # the buffer timeout is short, for the test that stalls the buffer on purpose.
        async with running(tmp_path, signer, notify_receiver, policy=RELAXED) as (agent, _, _):
            await notify_receiver.wait_for("READY=1")
            listen = next(e["listen"] for e in logs if e["event"] == "health_listening")
            async with asyncio.timeout(30):
                while not (agent.uplink and agent.uplink.stats.acked):  # noqa: ASYNC110 -- polling a counter
                    await asyncio.sleep(0.05)
            yield agent, f"http://{listen}"


def _families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


async def test_metrics_parse_with_the_reference_parser(served: tuple[Agent, str]) -> None:
    """/metrics is valid Prometheus text with per-device, buffer, uplink, pipeline and process families."""
    _, base = served
    code, ctype, body = await get(base + "/metrics")
    families = _families(body.decode())

    assert code == 200
    assert ctype.startswith("text/plain; version=0.0.4")
    polls = {s.labels["device"]: s.value for s in families["mine_agent_device_polls"].samples}
    assert set(polls) == {"plc0", "plc1"}
    assert all(v > 0 for v in polls.values())
    for name in ("mine_agent_device_connected", "mine_agent_device_errors", "mine_agent_device_samples",
                 "mine_agent_device_bad_samples", "mine_agent_device_last_poll_duration_seconds",
                 "mine_agent_buffer_backlog_batches", "mine_agent_buffer_backlog_bytes",
                 "mine_agent_buffer_oldest_age_seconds", "mine_agent_uplink_connected", "mine_agent_uplink_published",
                 "mine_agent_uplink_acked", "mine_agent_uplink_publish_timeouts", "mine_agent_uplink_reconnects",
                 "mine_agent_uplink_bad_backend_acks", "mine_agent_uplink_unverified_acks",
                 "mine_agent_pipeline_late", "mine_agent_pipeline_non_finite", "mine_agent_chain_seq",
                 "process_resident_memory_bytes", "process_cpu_seconds"):
        assert name in families, name
    assert families["mine_agent_uplink_acked"].type == "counter"
    assert families["mine_agent_uplink_acked"].samples[0].value > 0
    info = families["mine_agent_info"].samples[0].labels
    assert info["gateway"] == "gw-test"
    assert len(info["config_hash"]) == 16


async def test_health_document_is_ok_for_a_healthy_agent(served: tuple[Agent, str]) -> None:
    """/health answers 200 with status ok, the devices and the sequence number."""
    _, base = served
    code, ctype, body = await get(base + "/health")
    doc = json.loads(body)

    assert (code, ctype) == (200, "application/json")
    assert doc["status"] == "ok"
    assert doc["reasons"] == []
    assert set(doc["devices"]) == {"plc0", "plc1"}
    assert doc["seq"] >= 1


async def test_health_is_503_failing_when_the_buffer_hangs(served: tuple[Agent, str]) -> None:
    """A buffer that does not answer makes /health failing with a reason, served as HTTP 503."""
    agent, base = served
    agent.queue.stall()
    code, _, body = await get(base + "/health")
    agent.queue.unstall()
    doc = json.loads(body)

    assert code == 503
    assert doc["status"] == "failing"
    assert any("buffer did not answer" in r for r in doc["reasons"])


async def test_tail_returns_the_last_value_of_matching_tags(served: tuple[Agent, str]) -> None:
    """/tail?tags=plc1.* returns only plc1's tags, each with its last value and quality."""
    _, base = served
    code, _, body = await get(base + "/tail?tags=plc1.*")
    rows = json.loads(body)

    assert code == 200
    assert sorted(rows) == ["plc1.t0", "plc1.t1", "plc1.t2"]
    assert all(r["quality"] == 0 and isinstance(r["value"], float) for r in rows.values())


async def test_unknown_path_is_404(served: tuple[Agent, str]) -> None:
    """Anything but the three routes is 404 with the list of routes."""
    _, base = served
    code, _, body = await get(base + "/admin")

    assert code == 404
    assert b"/metrics" in body


async def test_a_silent_client_does_not_block_others(served: tuple[Agent, str]) -> None:
    """A connection that never sends its request does not stop the endpoint answering others."""
    _, base = served
    host, port = base.removeprefix("http://").rsplit(":", 1)
    _, writer = await asyncio.open_connection(host, int(port))
    try:
        code, _, _ = await get(base + "/health")
    finally:
        writer.close()

    assert code == 200


async def test_oversized_request_is_refused(served: tuple[Agent, str]) -> None:
    """A request head over 8 KiB gets 413 instead of being buffered."""
    _, base = served
    host, port = base.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /health HTTP/1.1\r\nX-Junk: " + b"a" * 20000 + b"\r\n\r\n")
    await writer.drain()
    async with asyncio.timeout(10):
        head = await reader.readline()
    writer.close()

    assert head.startswith(b"HTTP/1.1 413")


async def test_status_command_prints_a_table(served: tuple[Agent, str], capsys: pytest.CaptureFixture[str]) -> None:
    """`mine-agent status` shows the gateway state, each device, the buffer and the uplink; exit 0 when ok."""
    _, base = served
    code = await asyncio.to_thread(status.main, argparse.Namespace(url=base, json=False, timeout=10.0))
    out = capsys.readouterr().out

    assert code == 0
    assert "gateway gw-test: OK" in out
    assert "plc0" in out
    assert "plc1" in out
    assert "backlog" in out
    assert "connected; published" in out


async def test_status_json_is_the_health_document(served: tuple[Agent, str],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """`mine-agent status --json` prints the /health document."""
    _, base = served
    await asyncio.to_thread(status.main, argparse.Namespace(url=base, json=True, timeout=10.0))

    assert json.loads(capsys.readouterr().out)["gateway"] == "gw-test"


def test_status_without_an_agent_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    """No agent listening: exit 3 and a hint where to look."""
    code = status.main(argparse.Namespace(url="http://127.0.0.1:9", json=False, timeout=2.0))

    assert code == status.UNREACHABLE
    assert "systemctl status mine-agent" in capsys.readouterr().err


async def test_tail_command_prints_changed_values(served: tuple[Agent, str]) -> None:
    """`mine-agent tail plc0.t1` prints lines with the tag, its value and quality."""
    _, base = served
    out = io.StringIO()
    await asyncio.to_thread(tail.tail, base, ["plc0.t1"], interval=0.3, once=False, timeout=10.0, out=out, polls=3)
    lines = out.getvalue().splitlines()

    assert lines
    assert all(" plc0.t1 " in line and line.endswith(" good") for line in lines)


def test_status_says_when_and_why_the_gateway_is_not_publishing(capsys: pytest.CaptureFixture[str]) -> None:
    """`mine-agent status` puts the reason first and spells out what the buffer is doing about it."""
    doc = {"gateway": "gw-test", "status": "degraded", "seq": 500, "ts_ms": 1_700_000_000_000,
           "publishing": False, "publishing_reason": "disk_full",
           "buffer": {"batches": 3, "bytes": 3000, "dropped_batches": 78, "pending_drop_batches": 2, "refused": 9,
                      "condition": "disk_full", "clamped": ["buffer.min_free_bytes: clamped to 10 MiB"]},
           "uplink": {"connected": True}}
    status.render(doc)
    out = capsys.readouterr().out

    assert "NOT PUBLISHING: disk_full" in out.splitlines()[1]
    assert "dropped 78 batches (2 not yet declared)" in out
    assert "refused 9 appends" in out
    assert "buffer.min_free_bytes: clamped to 10 MiB" in out
