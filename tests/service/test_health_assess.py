"""Liveness and status decisions as scenario tables: (time, what the snapshot shows) -> verdict.

The monitor is fed snapshots at chosen times; no agent runs and nothing sleeps.
"""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agent.service.health import HealthMonitor, LivenessPolicy, assess
from tests.service.standins import make_config

POLICY = LivenessPolicy()  # the production defaults: flush 60 s, devices 180 s, uplink 120 s


def healthy(t: float) -> dict[str, Any]:
    """A snapshot of a healthy agent at time t whose counters move with t."""
    n = int(t * 10)
    return {
        "ready": True, "loop_lag_s": 0.0, "since_flush_s": 0.5, "buffer_error": None, "ts_ms": 1_700_000_000_000,
        "devices": {"plc0": {"polls": n, "errors": 0, "samples": 3 * n, "skipped_polls": 0, "connected": True,
                             "last_error": None}},
        "uplink": {"connected": True, "published": n, "acked": n, "inflight": 0, "last_error": None},
        "buffer": {"batches": 0, "oldest_created_ms": None, "dropped_batches": 0},
        "batcher": {"append_failures": 0, "rows_dropped_unbuffered": 0},
    }


def frozen_device(snap: dict[str, Any]) -> None:
    snap["devices"]["plc0"].update(polls=7, samples=21)


def wedged_uplink(snap: dict[str, Any]) -> None:
    snap["uplink"].update(published=5, acked=5, inflight=3)
    snap["buffer"]["batches"] = 40


def offline_uplink(snap: dict[str, Any]) -> None:
    wedged_uplink(snap)
    snap["uplink"].update(connected=False, inflight=0, last_error="connection refused")


def idle_uplink(snap: dict[str, Any]) -> None:
    snap["uplink"].update(published=5, acked=5, inflight=0)


def stale_flush(snap: dict[str, Any]) -> None:
    snap["since_flush_s"] = 64.0


def blocked_loop(snap: dict[str, Any]) -> None:
    snap["loop_lag_s"] = 12.0


def old_backlog(snap: dict[str, Any]) -> None:
    snap["buffer"].update(batches=300, oldest_created_ms=snap["ts_ms"] - 600_000)


def disconnected_device(snap: dict[str, Any]) -> None:
    snap["devices"]["plc0"].update(connected=False, errors=snap["devices"]["plc0"]["polls"],
                                   last_error="timeout after 1 s")


def old_drops(snap: dict[str, Any]) -> None:
    snap["buffer"]["dropped_batches"] = 12


def undeclared_drops(snap: dict[str, Any]) -> None:
    snap["buffer"].update(dropped_batches=12, pending_drop_batches=5, condition="dropping")


def declared_drops(snap: dict[str, Any]) -> None:
    snap["buffer"].update(dropped_batches=12, pending_drop_batches=0)


def disk_full(snap: dict[str, Any]) -> None:
    snap["buffer"]["condition"] = "disk_full"


def buffer_full(snap: dict[str, Any]) -> None:
    snap["buffer"]["condition"] = "buffer_full"


def clamped_watermark(snap: dict[str, Any]) -> None:
    snap["buffer"]["clamped"] = ["buffer.min_free_bytes: 64 MiB is more than half of the file system"]


def refused_appends(snap: dict[str, Any]) -> None:
    snap["batcher"]["append_failures"] = snap["devices"]["plc0"]["polls"] + 1  # still growing


def not_ready(snap: dict[str, Any]) -> None:
    snap["ready"] = False


# (name, change applied to every snapshot, observation times, expected status at the last one, reason part)
SCENARIOS = [
    ("healthy", None, [0, 100, 1000], "ok", None),
    ("device frozen below the limit", frozen_device, [0, 179], "ok", None),
    ("device frozen past the limit", frozen_device, [0, 181], "failing", "device plc0: poll loop stuck"),
    ("device down but retrying", disconnected_device, [0, 100, 1000], "degraded", "device plc0: not connected"),
    ("uplink wedged below the limit", wedged_uplink, [0, 119], "ok", None),
    ("uplink wedged past the limit", wedged_uplink, [0, 121], "failing", "uplink wedged"),
    ("broker unreachable for hours", offline_uplink, [0, 7200], "degraded", "uplink: not connected"),
    ("uplink idle with nothing to send", idle_uplink, [0, 7200], "ok", None),
    ("flush loop stale", stale_flush, [0], "failing", "pipeline flush has not completed"),
    ("event loop blocked", blocked_loop, [0], "failing", "event loop blocked"),
    ("backlog ten minutes old", old_backlog, [0], "degraded", "backlog: 300 batches"),
    ("starting", not_ready, [0], "failing", "starting"),
    ("buffer drops just happened", old_drops, [0], "degraded", "buffer dropped 12 batches"),
    ("buffer drops long ago", old_drops, [0, 601], "ok", None),
    ("buffer drops not yet declared", undeclared_drops, [0], "degraded", "5 of them not yet declared"),
    ("buffer drops declared", declared_drops, [0], "degraded", "declared in signed gap batches"),
    ("disk full: not storing", disk_full, [0], "degraded", "not publishing: disk_full"),
    ("buffer full: not storing", buffer_full, [0], "degraded", "not publishing: buffer_full"),
    ("watermark clamped at start", clamped_watermark, [0, 7200], "degraded", "buffer.min_free_bytes"),
    ("buffer refusing appends", refused_appends, [0, 601], "degraded", "buffer refused appends"),
]


@pytest.mark.parametrize(("name", "change", "times", "status", "reason"), SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_scenario(tmp_path: Path, name: str, change: Any, times: list[float], status: str, reason: str | None) -> None:
    """Each scenario's last observation gets the expected status and names the reason."""
    agent = SimpleNamespace(config=make_config(tmp_path, devices=1, poll_s=1.0, batch_interval_s=1.0),
                            started_at=0.0)
    monitor = HealthMonitor(agent, POLICY)  # type: ignore[arg-type]
    report = None
    for t in times:
        snap = copy.deepcopy(healthy(t))
        if change is not None:
            change(snap)
        report = assess(snap, monitor, float(t))
    assert report is not None

    assert report.status == status
    assert report.alive == (status != "failing" or reason == "starting")
    if reason is None:
        assert report.reasons == []
    else:
        assert any(reason in r for r in report.reasons), report.reasons


@pytest.mark.parametrize(("change", "publishing", "why"), [
    (None, True, None),
    (disk_full, False, "disk_full"),
    (buffer_full, False, "buffer_full"),
    (undeclared_drops, False, "dropping"),
    (offline_uplink, False, "link"),
])
def test_the_document_says_whether_and_why_the_gateway_is_not_publishing(
    tmp_path: Path, change: Any, publishing: bool, why: str | None
) -> None:
    """``publishing`` and ``publishing_reason`` in /health: the same words as the retained MQTT status."""
    agent = SimpleNamespace(config=make_config(tmp_path, devices=1, poll_s=1.0, batch_interval_s=1.0),
                            started_at=0.0)
    snap = healthy(0)
    if change is not None:
        change(snap)
    doc = assess(snap, HealthMonitor(agent, POLICY), 0.0).document()  # type: ignore[arg-type]

    assert (doc["publishing"], doc["publishing_reason"]) == (publishing, why)


def test_drops_are_never_called_declared_while_their_declaration_is_pending(tmp_path: Path) -> None:
    """/health claimed "declared in gap batches" while the gap batches themselves were being evicted: it now
    says declared only for drops whose declaration is stored (or acknowledged)."""
    agent = SimpleNamespace(config=make_config(tmp_path, devices=1, poll_s=1.0, batch_interval_s=1.0),
                            started_at=0.0)
    snap = healthy(0)
    snap["buffer"].update(dropped_batches=78, pending_drop_batches=78)
    report = assess(snap, HealthMonitor(agent, POLICY), 0.0)  # type: ignore[arg-type]

    assert not any("declared in" in r for r in report.reasons), report.reasons
    assert any("78 of them not yet declared" in r for r in report.reasons), report.reasons
