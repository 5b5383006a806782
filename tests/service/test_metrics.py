"""The Prometheus exposition, checked with prometheus-client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from agent.service.metrics import render_metrics


def families(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    return {f.name: [(s.labels, s.value) for s in f.samples] for f in text_string_to_metric_families(text)}


def test_label_values_are_escaped() -> None:
    """A device error or reason with quotes, backslashes and newlines cannot break the exposition."""
    doc = {"gateway": 'gw"1', "ready": True, "status": "ok",
           "buffer": {"batches": 1, "drops_by_reason": {'cap "full"\\\n': 3}}}
    got = families(render_metrics(doc))

    assert got["mine_agent_buffer_drops_by_reason"] == [({"reason": 'cap "full"\\\n'}, 3.0)]
    assert got["mine_agent_info"][0][0]["gateway"] == 'gw"1'


def test_missing_parts_give_no_samples_rather_than_nan() -> None:
    """Before the uplink and buffer exist their metrics are absent, not NaN or zero."""
    got = families(render_metrics({"gateway": "gw", "ready": False, "status": "failing"}))

    assert "mine_agent_uplink_connected" not in got
    assert "mine_agent_buffer_backlog_batches" not in got
    assert got["mine_agent_ready"] == [({}, 0.0)]
    assert {s[0]["status"]: s[1] for s in got["mine_agent_health_status"]} == {
        "ok": 0.0, "degraded": 0.0, "failing": 1.0}


def test_backlog_per_kind_and_age() -> None:
    """Per-kind backlog counts and bytes, and the oldest batch's age from the snapshot's own time."""
    doc = {"gateway": "gw", "ts_ms": 100_000, "buffer": {
        "batches": 3, "bytes": 300, "oldest_created_ms": 40_000,
        "by_kind": {"data": {"batches": 2, "bytes": 200}, "alarm": {"batches": 1, "bytes": 100}}}}
    got = families(render_metrics(doc))

    assert got["mine_agent_buffer_oldest_age_seconds"] == [({}, 60.0)]
    assert sorted((s[0]["kind"], s[1]) for s in got["mine_agent_buffer_backlog_batches_by_kind"]) == [
        ("alarm", 1.0), ("data", 2.0)]
    assert sorted((s[0]["kind"], s[1]) for s in got["mine_agent_buffer_backlog_bytes_by_kind"]) == [
        ("alarm", 100.0), ("data", 200.0)]


def test_publishing_and_why_not() -> None:
    """Whether the gateway is publishing, and the one reason it is not, as gauges."""
    doc = {"gateway": "gw", "publishing": False, "publishing_reason": "disk_full",
           "buffer": {"batches": 0, "pending_drop_batches": 3, "refused": 2}}
    got = families(render_metrics(doc))

    assert got["mine_agent_publishing"] == [({}, 0.0)]
    assert got["mine_agent_not_publishing"] == [({"reason": "disk_full"}, 1.0)]
    assert got["mine_agent_buffer_undeclared_dropped_batches"] == [({}, 3.0)]
    assert got["mine_agent_buffer_refused"] == [({}, 2.0)]


def test_ignored_acks_are_counters_and_show_in_status() -> None:
    """The uplink's refused acks are counters in the metrics and a line of 'mine-agent status'."""
    import io

    from agent.cli.status import render

    doc = {"gateway": "gw", "status": "degraded", "uplink": {"connected": True, "bad_backend_acks": 2,
                                                            "unverified_acks": 5}}
    got = families(render_metrics(doc))
    out = io.StringIO()
    render(doc, out)

    assert got["mine_agent_uplink_bad_backend_acks"] == [({}, 2.0)]
    assert got["mine_agent_uplink_unverified_acks"] == [({}, 5.0)]
    assert "acks ignored: 2 malformed, 5 unverified" in out.getvalue()
