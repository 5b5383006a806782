"""Prometheus text exposition (format 0.0.4) of a health snapshot, written with the standard library.

Why not prometheus-client at run time: the agent already keeps every counter in its parts' ``stats``
dataclasses; the client library would mean a second set of counters to keep in step, and a dependency on
the gateway for ~100 lines of text formatting. The test suite parses this output with prometheus-client's
parser, so the format is checked against the reference implementation.

Every metric is named ``mine_agent_*`` except the conventional ``process_*`` ones. Counters end in
``_total`` and never go down while the process runs.
"""

from __future__ import annotations

__all__ = ["CONTENT_TYPE", "render_metrics"]

import math
from collections.abc import Iterable, Mapping
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_STATUS = ("ok", "degraded", "failing")
_KIND_KEYS = ("by_kind", "kinds", "per_kind", "batches_by_kind")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: Any) -> str:
    if value is None:
        return "NaN"
    if isinstance(value, bool):
        return "1" if value else "0"
    v = float(value)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(int(v)) if v.is_integer() and abs(v) < 2**53 else repr(v)


class _Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str,
               samples: Iterable[tuple[Mapping[str, str], Any]]) -> None:
        rows = list(samples)
        if not rows:
            return
        # In format 0.0.4 a counter's HELP, TYPE and samples all carry the ``_total`` name.
        sample_name = f"{name}_total" if kind == "counter" else name
        self.lines.append(f"# HELP {sample_name} {help_text}")
        self.lines.append(f"# TYPE {sample_name} {kind}")
        for labels, value in rows:
            if labels:
                body = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
                self.lines.append(f"{sample_name}{{{body}}} {_number(value)}")
            else:
                self.lines.append(f"{sample_name} {_number(value)}")

    def one(self, name: str, kind: str, help_text: str, value: Any, **labels: str) -> None:
        if value is None:  # the part does not exist (yet): no sample rather than a misleading NaN
            return
        self.family(name, kind, help_text, [(labels, value)])


def render_metrics(doc: Mapping[str, Any]) -> str:
    """Render the ``/health`` document (:meth:`agent.service.health.HealthReport.document`) as metrics."""
    m = _Exposition()
    gw = {"gateway": str(doc.get("gateway"))}
    m.one("mine_agent_info", "gauge", "Always 1; labels carry the gateway id and configuration hash.", 1,
          gateway=str(doc.get("gateway")), config_hash=str(doc.get("config_hash", "")))
    m.one("mine_agent_ready", "gauge", "1 once the agent has started all its parts.", bool(doc.get("ready")))
    m.one("mine_agent_alive", "gauge", "1 while the liveness checks pass (watchdog pings are sent).",
          bool(doc.get("alive")))
    status = doc.get("status")
    m.family("mine_agent_health_status", "gauge", "1 for the current health status.",
             [({"status": s}, s == status) for s in _STATUS])
    if "publishing" in doc:
        m.one("mine_agent_publishing", "gauge", "1 while batches are stored and sent; 0 with a reason below.",
              bool(doc.get("publishing")))
        reason = doc.get("publishing_reason")
        if reason:
            m.family("mine_agent_not_publishing", "gauge",
                     "1 for why batches are not stored or sent (disk_full, buffer_full, dropping, store_error, link).",
                     [({"reason": str(reason)}, 1)])
    m.one("mine_agent_chain_seq", "gauge", "Sequence number of the last batch stored.", doc.get("seq"), **gw)
    m.one("mine_agent_uptime_seconds", "gauge", "Seconds since the agent became ready.", doc.get("uptime_s"))
    m.one("mine_agent_event_loop_lag_seconds", "gauge", "Delay of the watchdog task's last wake-up.",
          doc.get("loop_lag_s"))
    m.one("mine_agent_seconds_since_flush", "gauge", "Seconds since the pipeline last flushed to the buffer.",
          doc.get("since_flush_s"))

    devices: Mapping[str, Mapping[str, Any]] = doc.get("devices") or {}

    def per_device(key: str) -> list[tuple[dict[str, str], Any]]:
        return [({"device": name}, d.get(key)) for name, d in sorted(devices.items())]

    m.family("mine_agent_device_polls", "counter", "Polls (or notification bursts) attempted.", per_device("polls"))
    m.family("mine_agent_device_errors", "counter", "Failed polls and connection errors.", per_device("errors"))
    m.family("mine_agent_device_samples", "counter", "Samples produced.", per_device("samples"))
    m.family("mine_agent_device_bad_samples", "counter", "Samples of bad or uncertain quality.",
             per_device("bad_samples"))
    m.family("mine_agent_device_skipped_polls", "counter", "Polls skipped because the previous one overran.",
             per_device("skipped_polls"))
    m.family("mine_agent_device_connected", "gauge", "1 while the device is connected.", per_device("connected"))
    m.family("mine_agent_device_last_poll_duration_seconds", "gauge", "Duration of the last poll.",
             per_device("last_poll_duration_s"))
    m.family("mine_agent_device_last_ok_timestamp_seconds", "gauge", "Unix time of the last good poll.",
             [({"device": n}, d["last_ok_ms"] / 1000) for n, d in sorted(devices.items()) if d.get("last_ok_ms")])

    pipe: Mapping[str, Any] = doc.get("pipeline") or {}
    for key, help_text in (("samples", "Samples ingested by the pipeline."),
                           ("windows", "Window aggregate rows emitted."),
                           ("raw_rows", "Raw rows emitted."),
                           ("late", "Samples that arrived after their window closed (sent as raw rows)."),
                           ("non_finite", "NaN or infinite values, counted as bad.")):
        m.one(f"mine_agent_pipeline_{key}", "counter", help_text, pipe.get(key))

    bat: Mapping[str, Any] = doc.get("batcher") or {}
    for key, help_text in (("batches", "Batches signed and stored."),
                           ("rows", "Rows stored in batches."),
                           ("bytes", "Frame bytes stored."),
                           ("gap_batches", "Gap batches declaring buffer drops."),
                           ("outages_declared", "Collection gaps declared (outage rows), e.g. after an unclean stop."),
                           ("declarations_postponed",
                            "Declarations left pending while an earlier gap batch waited and the buffer dropped."),
                           ("append_failures", "Buffer appends that failed (rows kept in memory and retried)."),
                           ("rows_dropped_unbuffered", "Rows lost because the buffer refused them too long.")):
        m.one(f"mine_agent_batcher_{key}", "counter", help_text, bat.get(key))

    buf: Mapping[str, Any] = doc.get("buffer") or {}
    m.one("mine_agent_buffer_up", "gauge", "1 when the buffer answered the last stats request.",
          bool(doc.get("buffer")) and not doc.get("buffer_error"))
    m.one("mine_agent_buffer_backlog_batches", "gauge", "Batches stored and not yet acknowledged.",
          buf.get("batches"))
    m.one("mine_agent_buffer_backlog_bytes", "gauge", "Bytes of the stored, unacknowledged batches.",
          buf.get("bytes"))
    oldest = buf.get("oldest_created_ms")
    if buf:
        age = max(0.0, (doc.get("ts_ms", 0) - oldest) / 1000) if oldest else 0.0
        m.one("mine_agent_buffer_oldest_age_seconds", "gauge", "Age of the oldest unacknowledged batch.", age)
    kinds = next((buf[k] for k in _KIND_KEYS if isinstance(buf.get(k), Mapping)), None)
    if kinds:
        m.family("mine_agent_buffer_backlog_batches_by_kind", "gauge", "Unacknowledged batches per kind.",
                 [({"kind": k}, v.get("batches") if isinstance(v, Mapping) else v) for k, v in sorted(kinds.items())])
        with_bytes = [(k, v) for k, v in sorted(kinds.items()) if isinstance(v, Mapping) and "bytes" in v]
        m.family("mine_agent_buffer_backlog_bytes_by_kind", "gauge", "Unacknowledged bytes per kind.",
                 [({"kind": k}, v["bytes"]) for k, v in with_bytes])
    for key, help_text in (("appended", "Batches appended to the buffer."),
                           ("acked", "Batches acknowledged and deleted."),
                           ("dropped_batches", "Batches evicted by the size cap or the free-disk watermark."),
                           ("dropped_records", "Records in evicted batches."),
                           ("set_aside", "Batches set aside as unreadable (kept on disk, not sent)."),
                           ("refused", "Appends refused since start: what is never evicted left no room.")):
        m.one(f"mine_agent_buffer_{key}", "counter", help_text, buf.get(key))
    m.one("mine_agent_buffer_undeclared_dropped_batches", "gauge",
          "Dropped batches whose declaration (a gap batch) is not stored yet.", buf.get("pending_drop_batches"))
    drops = buf.get("drops_by_reason")
    if isinstance(drops, Mapping):
        m.family("mine_agent_buffer_drops_by_reason", "counter", "Evicted batches by reason.",
                 [({"reason": str(r)}, n) for r, n in sorted(drops.items())])

    up: Mapping[str, Any] = doc.get("uplink") or {}
    m.one("mine_agent_uplink_connected", "gauge", "1 while connected to the broker.", up.get("connected"))
    m.one("mine_agent_uplink_inflight", "gauge", "Batches published and awaiting acknowledgement.",
          up.get("inflight"))
    for key, help_text in (("published", "Batches published."),
                           ("acked", "Batches acknowledged and removed from the buffer."),
                           ("publish_timeouts", "Publishes without acknowledgement in time (link presumed dead)."),
                           ("reconnects", "Connections to the broker after the first."),
                           ("bad_backend_acks", "Malformed messages on the ack topic, ignored."),
                           ("unverified_acks", "Acks not verified as the archive's about this gateway's batches "
                                               "(unknown key, bad signature, other gateway, hash mismatch), "
                                               "ignored.")):
        m.one(f"mine_agent_uplink_{key}", "counter", help_text, up.get(key))

    proc: Mapping[str, Any] = doc.get("process") or {}
    m.one("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", proc.get("rss_bytes"))
    m.one("process_cpu_seconds", "counter", "User and system CPU time spent in seconds.", proc.get("cpu_seconds"))
    m.one("process_open_fds", "gauge", "Number of open file descriptors.", proc.get("open_fds"))
    m.one("process_start_time_seconds", "gauge", "Start time of the process since the Unix epoch in seconds.",
          proc.get("start_time_s"))
    return "\n".join(m.lines) + "\n"
