"""Push expiry and repeats through the configuration service, on the injected clock.

The agent is the stand-in of tests/remote/test_health_window.py (the real Agent's surface the service uses);
validation, the rules of agent.remote.guard, the state files and the statuses are the real code. The clock is
a FakeClock set years away from the real time, so only the injected clock can make these rows pass.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.core.clock import FakeClock
from agent.protocol.push import sign_push
from agent.remote.service import ALREADY_HANDLED, ConfigService, Outcome
from config.loader import load_config
from tests.e2e.harness import Gateway
from tests.remote.test_health_window import StandInAgent

CLOCK_START = 1_900_000_000.0  # 2030: far from the machine's real clock
DAY_MS = 86_400_000


def _service(tmp_path: Path) -> tuple[Gateway, ConfigService, FakeClock]:
    gw = Gateway(tmp_path)
    # The operator's trust list (here the gateway's own test key signs the pushes): bare key lines.
    operator_trust = tmp_path / "operator.trust"
    operator_trust.write_text(gw.signer.public_text + "\n")
    gw.write_config(mqtt_port=1883, devices=f'[remote_config]\ntrust_file = "{operator_trust}"\n'
                    "health_window_s = 4\n")
    clock = FakeClock(start=CLOCK_START)
    agent = StandInAgent(load_config(gw.config_path), clock)
    return gw, ConfigService(agent, gw.config_path), clock  # type: ignore[arg-type]


def _push(gw: Gateway, clock: FakeClock, *, issued_ms: int, version: int | None = None,
          batch_rows: int = 777) -> bytes:
    text = gw.config_path.read_text().replace("late_grace_s = 0.5",
                                              f"late_grace_s = 0.5\nbatch_max_rows = {batch_rows}")
    return sign_push(gw.signer, gateway=gw.id, version=version or int(clock.time()), toml=text, issued_ms=issued_ms)


# (issued, relative to the injected clock, in ms; the outcome's state; the start of its only reason)
EXPIRY: dict[str, tuple[int, str, str | None]] = {
    "just signed": (-2_000, "applied", None),
    "two days on the broker": (-2 * DAY_MS, "applied", None),
    "four days old": (-4 * DAY_MS, "rejected", "expired: issued 345600 s ago by this gateway's clock"),
    "ten minutes ahead": (600_000, "rejected", "issued 600 s in the future by this gateway's clock"),
    "four minutes ahead (within the skew)": (240_000, "applied", None),
}


@pytest.mark.parametrize("case", list(EXPIRY), ids=list(EXPIRY))
async def test_push_expiry_on_the_injected_clock(tmp_path: Path, case: str) -> None:
    offset, state, reason = EXPIRY[case]
    gw, service, clock = _service(tmp_path)

    outcome = await service.handle_push(_push(gw, clock, issued_ms=int(clock.time() * 1000) + offset))

    assert outcome is not None
    assert outcome.state == state, outcome.reasons
    if reason is None:
        assert outcome.reasons == []
    else:
        assert len(outcome.reasons) == 1
        assert outcome.reasons[0].startswith(reason)


async def test_expiry_follows_the_clock_as_it_moves(tmp_path: Path) -> None:
    """The same push bytes: fresh now, expired once the injected clock has moved three days and six minutes."""
    gw, service, clock = _service(tmp_path)
    fresh = _push(gw, clock, issued_ms=int(clock.time() * 1000), version=5)
    stale = _push(gw, clock, issued_ms=int(clock.time() * 1000), version=6, batch_rows=778)

    assert (await service.handle_push(fresh)).state == "applied"  # type: ignore[union-attr]
    await clock.advance(3 * 86400 + 360)
    outcome = await service.handle_push(stale)

    assert outcome is not None
    assert outcome.state == "rejected"
    assert outcome.reasons[0].startswith("expired: issued 259560 s ago")


def _published(service: ConfigService) -> list[tuple[str, bool]]:
    return [(o.state, o.repeat) for o in service.outcomes]


# What the first delivery ends in, and what every later delivery of the same bytes publishes
REPEATS: dict[str, tuple[int, str]] = {
    "applied push": (0, "applied"),
    "refused push (expired)": (-5 * DAY_MS, "rejected"),
}


@pytest.mark.parametrize("case", list(REPEATS), ids=list(REPEATS))
async def test_every_delivery_gets_a_status(tmp_path: Path, case: str) -> None:
    """A push delivered again is not handled again, but its recorded final outcome is published once more,
    marked repeat, so the operator's tool always gets an answer; nothing is applied or written."""
    offset, final = REPEATS[case]
    gw, service, clock = _service(tmp_path)
    payload = _push(gw, clock, issued_ms=int(clock.time() * 1000) + offset)
    first = await service.handle_push(payload)
    assert first is not None
    history = service.files.history()
    applied = len(service.agent.applied)  # type: ignore[attr-defined]

    again = [await service.handle_push(payload) for _ in range(3)]

    assert all(isinstance(o, Outcome) for o in again)
    assert [(o.state, o.repeat, o.push, o.reasons, o.version) for o in again if o] == [
        (final, True, first.push, first.reasons, first.version)] * 3
    states = _published(service)
    assert states[-3:] == [(final, True)] * 3
    assert service.files.history() == history
    assert len(service.agent.applied) == applied  # type: ignore[attr-defined]


async def test_repeat_whose_outcome_is_forgotten_is_rejected_as_handled(tmp_path: Path) -> None:
    gw, service, clock = _service(tmp_path)
    payload = _push(gw, clock, issued_ms=int(clock.time() * 1000))
    assert (await service.handle_push(payload)).state == "applied"  # type: ignore[union-attr]
    service.files.history_path.unlink()

    again = await service.handle_push(payload)

    assert again is not None
    assert (again.state, again.repeat, again.reasons) == ("rejected", True, [ALREADY_HANDLED])


async def test_a_push_answered_busy_is_handled_when_sent_again(tmp_path: Path) -> None:
    """'busy' is not remembered: the same bytes delivered later are checked and applied, not a repeat."""
    from agent.remote.service import BUSY

    gw, service, clock = _service(tmp_path)
    payload = _push(gw, clock, issued_ms=int(clock.time() * 1000))

    service.refuse_busy(payload)
    later = await service.handle_push(payload)

    first = service.outcomes[0]
    assert (first.state, first.reasons, first.repeat) == ("rejected", [BUSY], False)
    assert later is not None
    assert (later.state, later.repeat) == ("applied", False)
