"""Configuration changes that apply safely or roll back by themselves: remote pushes and local reloads.

Both a signed push from the operator (agent.protocol.push, received by agent.remote.channel) and a technician's
``systemctl reload`` / ``mine-agent reload`` (SIGHUP) go through one path, :meth:`ConfigService._try`:

1. **validate** exactly as ``mine-agent validate`` does (:func:`config.loader.parse_config`), plus the rules
   of remote configuration (agent.remote.guard): a push may not drop ``[remote_config]``, point ``trust_file``
   elsewhere (rotating operator keys is a push's ``trust`` list instead, signed by a key trusted now), change
   any file path, move the broker or the health endpoint beyond what the local file allows;
2. **stage** the text and its metadata in the state directory (agent.remote.state), so an attempt interrupted
   by a crash or power cut is known at the next start-up and counts as rolled back;
3. **apply** with :meth:`agent.runtime.Agent.apply`, the same code as start-up: only the devices and parts
   whose settings changed are restarted, and the buffer is never touched (settings that would need that are
   refused before anything changes, and reported as *rejected*);
4. **health window**: every started or restarted device must connect and read a good value, and a restarted
   uplink must reconnect, within ``remote_config.health_window_s``. The window ends as soon as all of that is
   true, so a good change is reported quickly;
5. on failure, **roll back** with ``Agent.apply(previous)`` and report why; on success, the text becomes the
   last-known-good configuration (written atomically) and the outcome joins the history.

Every outcome of a push whose signature verified (and of a local reload) is published on
``<prefix>/<gw>/config/status`` (docs/protocol.md §10) and kept in ``<state_dir>/config/history.json``.
Payloads refused *before* their signature verified may come from anyone who can publish on the config topic,
at any rate: they are counted in memory, never written to disk nor entered in the history (a flood would wear
the flash and push genuine outcomes out of the history), and answered through a token bucket (a burst of
:data:`REFUSAL_BURST`, then one per :data:`REFUSAL_INTERVAL_S`), each answer carrying the number of refusals
left unanswered since the previous one. Rejected: answering each one (a flood then buries the statuses of a
genuine push) or none (an operator who signed with the wrong key would wait for nothing).

A push delivered again (retained copy, redelivery, an operator sending the same bytes) is not handled again, but
it is answered: its recorded outcome is published once more, marked ``repeat``, so the operator's tool never
waits for nothing; a repeat whose outcome is no longer recorded gets ``rejected`` with the reason
:data:`ALREADY_HANDLED`. Which file is in force at start-up (the technician's or the last pushed one) is decided
by :func:`startup_config`; the rule is in agent.remote.state.
"""

from __future__ import annotations

__all__ = ["ConfigService", "Outcome", "startup_config"]

import asyncio
import contextlib
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from agent.core.cancellation import stop_task
from agent.core.errors import AgentError, ConfigError
from agent.protocol.push import ConfigPush, PushRefused, authenticate_push, open_push, push_id
from agent.protocol.signing import BatchSigner, TrustStore, load_signer
from agent.remote.guard import push_limits, remote_rules
from agent.remote.state import ConfigState, StateFiles, sha256_text, state_dir_of, write_atomic
from agent.runtime import Agent, ApplyResult
from config.loader import load_config, parse_config
from config.schema import AgentConfig

log = structlog.get_logger(__name__)

PID_FILE = "agent.pid"
_HEALTH_POLL_S = 0.1
INTERRUPTED = "the agent stopped during the apply or its health window (restart, crash or power cut)"
ALREADY_HANDLED = "already handled: this push was received before and its outcome is no longer in the history"
FINAL_STATES = frozenset({"rejected", "applied", "rolled_back"})
#: unauthenticated refusals answered at once, then one per REFUSAL_INTERVAL_S (the others are only counted)
REFUSAL_BURST = 10
REFUSAL_INTERVAL_S = 5.0
#: a push handled before is answered again at most once per this many seconds (copies beyond are ignored)
REPEAT_INTERVAL_S = 1.0
BUSY = "busy: too many pushes are waiting on this gateway; nothing was checked or applied, send it again later"


@dataclass(slots=True)
class Outcome:
    """One configuration change's result, as published on the status topic and kept in the history."""

    state: str  # received | rejected | applied | rolled_back | kept
    source: str  # remote | local
    version: int | None = None
    push: str | None = None
    kid: str | None = None
    reasons: list[str] = field(default_factory=list)
    received_ms: int | None = None
    ts: int | None = None
    running_version: int | None = None
    changed: dict[str, list[str]] = field(default_factory=dict)
    repeat: bool = False
    #: unauthenticated payloads refused, and not answered one by one, since the previous such answer
    suppressed: int = 0
    #: False for a payload refused before its signature verified (never recorded; not published as such)
    authentic: bool = True

    def to_json(self, gateway: str) -> dict[str, Any]:
        return {
            "gateway": gateway,
            "source": self.source,
            "version": self.version,
            "push": self.push,
            "kid": self.kid,
            "state": self.state,
            "reasons": self.reasons,
            "received_ms": self.received_ms,
            "ts": self.ts,
            "running_version": self.running_version,
            "changed": self.changed,
            "repeat": self.repeat,
            "suppressed": self.suppressed,
        }


def startup_config(local_path: Path) -> tuple[AgentConfig, list[Outcome]]:
    """The configuration to start with, and outcomes to report once connected.

    In order: an attempt interrupted by a stop is recorded as rolled back (its text was never accepted); a
    local file that does not validate, or that is exactly an edit already rolled back, does not start when a
    last-known-good configuration exists (a reboot never bricks the gateway, nor changes what ran before it);
    a remotely applied configuration stays in force until the technician's file changes; otherwise the
    local file starts and becomes the last-known-good one. Raises ConfigError only when the local file is
    invalid and nothing known-good exists.
    """
    try:
        local: AgentConfig | None = load_config(local_path)
    except ConfigError as exc:
        local, invalid = None, exc
    state_dir = local.gateway.state_dir if local is not None else state_dir_of(local_path)
    files = StateFiles(state_dir, history_limit=_history_limit(local) if local is not None else 200)
    state = files.load_state()
    pending = _interrupted_attempt(files, state)

    if local is None:
        good = _good_config(files, state_dir)
        if good is None:
            raise invalid
        log.error("config_local_invalid", error="the local file does not validate; starting the last-known-good "
                  "configuration", problems=[str(p) for p in invalid.problems])
        outcome = Outcome("rejected", "local", reasons=[str(p) for p in invalid.problems], ts=_now_ms(),
                          running_version=state.version)
        files.record(outcome.to_json(good.gateway.id))
        return good, [*pending, outcome]

    local_text = local_path.read_text(encoding="utf-8")
    local_hash = sha256_text(local_text)
    if (state.source == "remote" and state.local_sha256 == local_hash) or state.bad_local_sha256 == local_hash:
        good = _good_config(files, state_dir)
        if good is not None:
            if state.bad_local_sha256 == local_hash:
                log.warning("config_local_edit_rolled_back", error="this local file failed its health window; "
                            "the last-known-good configuration starts until the file changes")
            else:
                log.info("config_from_push", version=state.version, push=state.push)
            return good, pending
    if state.source != "local" or state.local_sha256 != local_hash:
        if state.source == "remote":
            log.info("config_local_file_wins", error="the local file changed since the last push was applied",
                     version=state.version)
        files.accept(local_text, ConfigState(source="local", version=0, highest_version=state.highest_version,
                                             local_sha256=local_hash, applied_ms=_now_ms(),
                                             last_seen_push=state.last_seen_push))
    return local, pending


def _interrupted_attempt(files: StateFiles, state: ConfigState) -> list[Outcome]:
    staged = files.staged()
    if staged is None:
        return []
    version = staged.get("version")
    outcome = Outcome(state="rolled_back", source=str(staged.get("source", "remote")),
                      version=version if isinstance(version, int) else None,
                      push=staged.get("push"), kid=staged.get("kid"), reasons=[INTERRUPTED],
                      received_ms=staged.get("received_ms"), ts=_now_ms(), running_version=state.version)
    if isinstance(version, int):
        state.highest_version = max(state.highest_version, version)
        files.save_state(state)
    files.record(outcome.to_json(str(staged.get("gateway", ""))))
    files.unstage()
    log.warning("config_attempt_interrupted", version=outcome.version, error=INTERRUPTED)
    return [outcome]


def _good_config(files: StateFiles, state_dir: Path) -> AgentConfig | None:
    """The last-known-good configuration, if there is one that still validates for this state directory."""
    text = files.good_text()
    if text is None:
        return None
    try:
        good = parse_config(text, str(files.good_path))
    except ConfigError as exc:
        log.error("config_good_unusable", error="the last-known-good configuration no longer validates",
                  problems=[str(p) for p in exc.problems])
        return None
    return good if good.gateway.state_dir == state_dir else None


class ConfigService:
    """Runs remote configuration and local reloads for one running :class:`Agent`.

    ``run()`` (until cancelled) writes the pid file for ``mine-agent reload`` and, when ``[remote_config]``
    is enabled, keeps the MQTT channel for pushes and statuses. ``reload_local()`` is what SIGHUP calls.
    """

    def __init__(self, agent: Agent, local_path: Path, *, pending: list[Outcome] | None = None,
                 signer: BatchSigner | None = None) -> None:
        self.agent = agent
        #: the gateway key that signs the statuses (docs/protocol.md §10.4); loaded by run() when not given
        self.signer = signer
        self.local_path = local_path
        self.files = StateFiles(agent.config.gateway.state_dir, history_limit=_history_limit(agent.config))
        self._lock = asyncio.Lock()
        #: posts a status: (status, droppable): repeats and unauthenticated refusals are droppable, so a
        #: full status queue sheds them before any genuine outcome
        self._publish: Callable[[dict[str, Any], bool], None] | None = None
        self._early: list[dict[str, Any]] = [o.to_json(agent.config.gateway.id) for o in pending or []]
        #: set whenever the running configuration changes, so the channel can follow [mqtt]
        self.config_changed = asyncio.Event()
        #: called whenever the running configuration changes (applied or rolled back), so services beside
        #: the agent, such as the health endpoint, follow a push as they follow a local reload
        self.on_change: list[Callable[[], None]] = []
        #: the latest outcomes of this run, newest last (for status displays and tests)
        self.outcomes: deque[Outcome] = deque(maxlen=100)
        # ids of authentic pushes handled in this run; a refused one is not written to state.json (forged
        # pushes never get this far, and are written nowhere).
        self._recent: deque[str] = deque(maxlen=64)
        seen = self.files.load_state().last_seen_push
        if seen is not None:
            self._recent.append(seen)
        self._repeat_answered: dict[str, float] = {}
        #: payloads refused before their signature verified, in this run (they are kept nowhere else)
        self.refused_unauthenticated = 0
        self._suppressed = 0
        self._refusal_tokens = float(REFUSAL_BURST)
        self._refusal_clock: float | None = None
        self._latest_suppressed: Outcome | None = None
        self._refusal_flush: asyncio.Task[None] | None = None
        self._trust_cache: tuple[tuple[int, int, int], TrustStore] | None = None

    # -- running -----------------------------------------------------------------------------------------

    async def run(self) -> None:
        from agent.remote.channel import RemoteChannel

        await self.agent.ready.wait()
        if self.signer is None:
            key_file = self.agent.config.gateway.key_file
            try:
                self.signer = await asyncio.to_thread(load_signer, key_file)
            except AgentError as exc:
                # The agent itself cannot run without this key, so this is a stand-in or a broken install:
                # statuses still go out, unsigned, and no operator tool given the gateway key believes them.
                log.error("config_status_unsigned", path=str(key_file), error=str(exc))
        pid_path = self.agent.config.gateway.state_dir / PID_FILE
        write_atomic(pid_path, f"{os.getpid()}\n".encode())
        try:
            channel = RemoteChannel(self)
            self._publish = channel.post
            for status in self._early:
                channel.post(status, False)
            self._early.clear()
            await channel.run()
        finally:
            self._publish = None
            if self._refusal_flush is not None:
                await stop_task(self._refusal_flush, 1.0)
            with contextlib.suppress(OSError):
                pid_path.unlink()

    def emit(self, outcome: Outcome) -> None:
        """Report ``outcome`` on the status topic (queued while the channel is down) and in the log."""
        outcome.ts = self._now_ms()
        outcome.running_version = self.files.load_state().version
        self.outcomes.append(outcome)
        status = outcome.to_json(self.agent.config.gateway.id)
        level = log.warning if outcome.state in ("rejected", "rolled_back") else log.info
        # an unauthenticated refusal also says how many it stands for, and how many this run has refused
        counts = {} if outcome.authentic else {"suppressed": outcome.suppressed,
                                                "refused_unauthenticated": self.refused_unauthenticated}
        level("config_status", state=outcome.state, source=outcome.source, version=outcome.version,
              push=outcome.push, reasons=outcome.reasons, **counts)
        if self._publish is not None:
            self._publish(status, outcome.repeat or not outcome.authentic)
        else:
            self._early.append(status)

    # -- the two entry points ----------------------------------------------------------------------------

    async def handle_push(self, payload: bytes) -> Outcome | None:
        """Check and apply one payload received on the config topic. None when it is ignored (an empty
        retained-message clear); a push already handled gets its recorded outcome again (:meth:`_repeat`)."""
        if not payload:
            return None
        async with self._lock:
            pid = push_id(payload)
            state = self.files.load_state()
            if pid == state.last_seen_push or pid in self._recent:
                return self._repeat(pid)  # the same bytes as an authentic push: authentic too
            received = self._now_ms()
            reasons = self._unauthenticated(payload)
            remote = self.agent.config.remote_config
            trust_path = self.agent.config.trust_path
            if reasons is not None or remote is None or trust_path is None:
                return self._refuse_unauthenticated(pid, reasons or [], received)
            self._recent.append(pid)
            try:
                push = open_push(payload, trust=self._trust(trust_path), gateway=self.agent.config.gateway.id,
                                 highest_version=state.highest_version, now_ms=received,
                                 limits=push_limits(remote))
            except PushRefused as exc:
                outcome = Outcome("rejected", "remote", version=exc.version, push=pid, received_ms=received,
                                  reasons=exc.reasons)
                return self._finish(outcome)
            except AgentError as exc:  # the trust file changed in between
                return self._refuse_unauthenticated(pid, [f"trust file unusable: {exc}"], received)
            # Authentic: remembered on disk, so a retained copy is not handled again after a restart.
            state.last_seen_push = pid
            self.files.save_state(state)
            self.emit(Outcome("received", "remote", version=push.version, push=pid, kid=push.kid,
                              received_ms=received))
            return await self._try_push(push, received)

    def screen(self, payload: bytes) -> bool:
        """Whether ``payload`` may wait for :meth:`handle_push`: only a push whose signature verifies, and that
        was not handled before, takes a queue slot. Anything else is refused here, at once, so a
        flood of junk neither fills the queue nor delays a genuine push behind it."""
        if not payload:
            return False
        pid = push_id(payload)
        if pid in self._recent:
            # Handled before (the channel keeps copies of a push still waiting or being handled away): its
            # outcome is answered here, at most once per REPEAT_INTERVAL_S, so replayed copies of old pushes
            # never occupy the queue either.
            now = self.agent.clock.monotonic()
            last = self._repeat_answered.get(pid)
            if last is None or now - last >= REPEAT_INTERVAL_S:
                self._repeat_answered = {p: t for p, t in self._repeat_answered.items() if p in self._recent}
                self._repeat_answered[pid] = now
                self._repeat(pid)
            return False
        reasons = self._unauthenticated(payload)
        if reasons is None:
            return True
        self._refuse_unauthenticated(pid, reasons, self._now_ms())
        return False

    def _unauthenticated(self, payload: bytes) -> list[str] | None:
        """Why ``payload`` cannot be authenticated (form, size, signature, no usable trust list), or None."""
        remote = self.agent.config.remote_config
        trust_path = self.agent.config.trust_path
        if remote is None or trust_path is None or not remote.enabled:
            return ["remote configuration is disabled on this gateway"]
        try:
            trust = self._trust(trust_path)
        except AgentError as exc:
            return [f"trust file unusable: {exc}"]
        try:
            authenticate_push(payload, trust=trust, limits=push_limits(remote))
        except PushRefused as exc:
            return exc.reasons
        return None

    def _trust(self, path: Path) -> TrustStore:
        """The operator trust list, read again whenever the file changes (a technician's edit counts for the
        next push), not for every payload: screening a flood must not cost a file read each."""
        try:
            st = path.stat()
        except OSError as exc:
            raise AgentError(f"cannot read trust file: {exc.strerror}", path=str(path)) from exc
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if self._trust_cache is None or self._trust_cache[0] != stamp:
            self._trust_cache = (stamp, TrustStore.from_file(path))
        return self._trust_cache[1]

    def _refuse_unauthenticated(self, pid: str, reasons: list[str], received: int) -> Outcome:
        """A payload refused before its signature verified: counted, written nowhere, and answered only as the
        token bucket allows. One not answered now is answered later if it is still the latest when a token
        is free, with ``suppressed`` saying how many others went unanswered before it."""
        self.refused_unauthenticated += 1
        outcome = Outcome("rejected", "remote", push=pid, received_ms=received, reasons=reasons, authentic=False)
        if self._refusal_token():
            outcome.suppressed, self._suppressed = self._suppressed, 0
            self.emit(outcome)
            return outcome
        self._suppressed += 1
        self._latest_suppressed = outcome
        if self._refusal_flush is None:
            self._refusal_flush = asyncio.get_running_loop().create_task(
                self._flush_refusals(), name="remote_config.refusals")
        return outcome

    def _refusal_token(self) -> bool:
        now = self.agent.clock.monotonic()
        if self._refusal_clock is not None:
            self._refusal_tokens = min(float(REFUSAL_BURST), self._refusal_tokens
                                       + (now - self._refusal_clock) / REFUSAL_INTERVAL_S)
        self._refusal_clock = now
        if self._refusal_tokens < 1.0:
            return False
        self._refusal_tokens -= 1.0
        return True

    async def _flush_refusals(self) -> None:
        """Answer the latest unanswered refusal once a token is free, so a flood's end is reported too."""
        try:
            while self._suppressed and self._latest_suppressed is not None:
                await self.agent.clock.sleep((1.0 - self._refusal_tokens) * REFUSAL_INTERVAL_S + 0.01)
                if self._suppressed and self._latest_suppressed is not None and self._refusal_token():
                    outcome, self._latest_suppressed = self._latest_suppressed, None
                    outcome.suppressed, self._suppressed = self._suppressed - 1, 0
                    self.emit(outcome)
        finally:
            self._refusal_flush = None

    def refuse_busy(self, payload: bytes) -> None:
        """A push that arrived while too many were waiting: answered at once, and not remembered, so the
        same push sent again later is handled normally."""
        if payload:
            self.emit(Outcome("rejected", "remote", push=push_id(payload), received_ms=self._now_ms(),
                              reasons=[BUSY]))

    def _repeat(self, pid: str) -> Outcome:
        """A push handled before: publish its recorded final outcome again, marked ``repeat`` (nothing is
        applied, and nothing is written: a flood of copies costs the flash nothing)."""
        recorded = next((entry for entry in reversed(self.files.history())
                         if isinstance(entry, dict) and entry.get("push") == pid
                         and entry.get("state") in FINAL_STATES), None)
        if recorded is None:
            outcome = Outcome("rejected", "remote", push=pid, reasons=[ALREADY_HANDLED], repeat=True)
        else:
            outcome = _recorded_outcome(recorded, pid)
        log.debug("config_push_repeated", push=pid, state=outcome.state)
        self.emit(outcome)
        return outcome

    async def reload_local(self) -> Outcome:
        """SIGHUP: the technician's file through the same validation, apply and health window."""
        async with self._lock:
            received = self._now_ms()
            try:
                text = await asyncio.to_thread(self.local_path.read_text, encoding="utf-8")
            except OSError as exc:
                return self._finish(Outcome("rejected", "local", received_ms=received,
                                            reasons=[f"cannot read {self.local_path}: {exc.strerror or exc}"]))
            state = self.files.load_state()
            local_hash = sha256_text(text)
            if state.source == "remote" and state.local_sha256 == local_hash:
                reason = (f"the local file has not changed since remote version {state.version} was applied; "
                          "the pushed configuration stays in force (edit the file to take over)")
                return self._finish(Outcome("kept", "local", version=state.version, received_ms=received,
                                            reasons=[reason]))
            try:
                new = parse_config(text, str(self.local_path))
            except ConfigError as exc:
                return self._finish(Outcome("rejected", "local", received_ms=received,
                                            reasons=[str(p) for p in exc.problems]))
            outcome = Outcome("applied", "local", received_ms=received)
            accepted = ConfigState(source="local", version=0, highest_version=state.highest_version,
                                   local_sha256=local_hash, last_seen_push=state.last_seen_push)
            return await self._try(new, text, outcome, accepted)

    # -- the one path ------------------------------------------------------------------------------------

    async def _try_push(self, push: ConfigPush, received: int) -> Outcome:
        outcome = Outcome("applied", "remote", version=push.version, push=push.id, kid=push.kid,
                          received_ms=received)
        try:
            new = parse_config(push.toml, f"push v{push.version}")
        except ConfigError as exc:
            outcome.state, outcome.reasons = "rejected", [str(p) for p in exc.problems]
            return self._finish(outcome)
        reasons = remote_rules(self.agent.config, new)
        if reasons:
            outcome.state, outcome.reasons = "rejected", reasons
            return self._finish(outcome)
        state = self.files.load_state()
        local_hash = await asyncio.to_thread(_file_hash, self.local_path)
        accepted = ConfigState(source="remote", version=push.version,
                               highest_version=max(state.highest_version, push.version),
                               local_sha256=local_hash or state.local_sha256, push=push.id, kid=push.kid,
                               last_seen_push=state.last_seen_push)
        return await self._try(new, push.toml, outcome, accepted, trust=push.trust)

    async def _try(self, new: AgentConfig, text: str, outcome: Outcome, accepted: ConfigState,
                   *, trust: tuple[str, ...] | None = None) -> Outcome:
        agent = self.agent
        old = agent.config
        state = self.files.load_state()
        self.files.stage(text, {"gateway": agent.config.gateway.id, "source": outcome.source,
                                "version": outcome.version, "push": outcome.push, "kid": outcome.kid,
                                "received_ms": outcome.received_ms})
        try:
            try:
                result = await agent.apply(new)
            except ConfigError as exc:
                # Refused before anything changed (e.g. a setting that needs a restart).
                outcome.state, outcome.reasons = "rejected", [p.message if p.key == "" else f"{p.key}: {p.message}"
                                                             for p in exc.problems]
                return self._finish(outcome)
            except Exception as exc:  # e.g. a driver that cannot even be constructed: undo what was done
                log.exception("config_apply_failed", version=outcome.version, error=repr(exc))
                await self._roll_back(old, outcome, [f"apply failed: {exc}"], state, half_applied=new,
                                      bad_local=accepted.local_sha256 if outcome.source == "local" else None)
                return self._finish(outcome)
            self._changed()
            outcome.changed = result.summary()
            window = _health_window(new)
            failures = await self._health(result, window)
            if failures:
                await self._roll_back(old, outcome, failures, state,
                                      bad_local=accepted.local_sha256 if outcome.source == "local" else None)
                return self._finish(outcome)
            accepted.applied_ms = self._now_ms()
            previous_trust: bytes | None = None
            try:
                if trust is not None and new.trust_path is not None:
                    previous_trust = self._rotate_trust(new.trust_path, trust)
                self.files.accept(text, accepted)
            except OSError as exc:
                # Unrecorded, the change would silently revert at the next start: undo it now instead.
                reason = f"cannot record the new configuration or trust list: {exc.strerror or exc}"
                if previous_trust is not None and new.trust_path is not None:
                    with contextlib.suppress(OSError):
                        write_atomic(new.trust_path, previous_trust)
                await self._roll_back(old, outcome, [reason], state)
                return self._finish(outcome)
            outcome.state = "applied"
            return self._finish(outcome)
        finally:
            self.files.unstage()

    async def _roll_back(self, old: AgentConfig, outcome: Outcome, reasons: list[str], state: ConfigState,
                         *, half_applied: AgentConfig | None = None, bad_local: str | None = None) -> None:
        outcome.state, outcome.reasons = "rolled_back", reasons
        try:
            await self.agent.apply(old, assume_running=half_applied)
        except AgentError as exc:
            outcome.reasons.append(f"restoring the previous configuration failed: {exc}")
            log.error("config_rollback_failed", version=outcome.version, error=str(exc))
        self._changed()
        if outcome.version is not None:
            state.highest_version = max(state.highest_version, outcome.version)
        if bad_local is not None:
            state.bad_local_sha256 = bad_local
        self.files.save_state(state)

    async def _health(self, result: ApplyResult, window: float) -> list[str]:
        """What the new configuration must achieve, checked until it holds or ``window`` seconds pass."""
        clock = self.agent.clock
        devices = [p.split(":", 1)[1] for p in (*result.started, *result.restarted) if p.startswith("device:")]
        uplink = "uplink" in result.restarted
        deadline = clock.monotonic() + window
        while True:
            failures = self._unhealthy(devices, uplink=uplink, window=window)
            if not failures or clock.monotonic() >= deadline:
                return failures
            await clock.sleep(min(_HEALTH_POLL_S, max(0.0, deadline - clock.monotonic())))

    def _unhealthy(self, devices: list[str], *, uplink: bool, window: float) -> list[str]:
        failures = []
        for name in devices:
            driver = self.agent.drivers.get(name)
            if driver is None:
                failures.append(f"device {name!r}: not running")
                continue
            stats = driver.stats
            if not stats.connected or stats.samples <= stats.bad_samples:
                last = stats.last_error or "no reading yet"
                failures.append(f"device {name!r}: no good reading within {window:g} s (last error: {last})")
        if uplink:
            uplink_stats = getattr(self.agent.uplink, "stats", None)
            if uplink_stats is None or not uplink_stats.connected:
                last = getattr(uplink_stats, "last_error", None) or "not connected yet"
                failures.append(f"uplink: not connected to the broker within {window:g} s (last error: {last})")
        return failures

    def _rotate_trust(self, path: Path, keys: tuple[str, ...]) -> bytes:
        """Replace the operator trust list with the one a trusted push carried; the old one is kept in
        ``trust.prev`` and returned."""
        previous = path.read_bytes()
        write_atomic(self.files.dir / "trust.prev", previous, 0o644)
        text = "# operator keys, replaced by a signed configuration push\n" + "\n".join(keys) + "\n"
        write_atomic(path, text.encode(), 0o644)
        log.info("config_trust_rotated", keys=len(keys))
        return previous

    def _changed(self) -> None:
        self.config_changed.set()
        for listener in self.on_change:
            listener()

    def _now_ms(self) -> int:
        return int(self.agent.clock.time() * 1000)

    def _finish(self, outcome: Outcome) -> Outcome:
        self.emit(outcome)
        self.files.record(outcome.to_json(self.agent.config.gateway.id))
        return outcome


def _recorded_outcome(entry: dict[str, Any], pid: str) -> Outcome:
    """The outcome kept in the history for push ``pid`` (a file this agent wrote, read defensively)."""
    def number(key: str) -> int | None:
        value = entry.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def text(key: str) -> str | None:
        value = entry.get(key)
        return value if isinstance(value, str) else None

    reasons = entry.get("reasons")
    changed = entry.get("changed")
    return Outcome(str(entry.get("state")), "remote", version=number("version"), push=pid, kid=text("kid"),
                   reasons=[r for r in reasons if isinstance(r, str)] if isinstance(reasons, list) else [],
                   received_ms=number("received_ms"),
                   changed=changed if isinstance(changed, dict) else {}, repeat=True)


def _health_window(config: AgentConfig) -> float:
    return config.remote_config.health_window_s if config.remote_config is not None else 60.0


def _history_limit(config: AgentConfig) -> int:
    return config.remote_config.history if config.remote_config is not None else 200


def _file_hash(path: Path) -> str | None:
    try:
        return sha256_text(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return None


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
