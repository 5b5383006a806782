"""Hostile and broken pushes are refused with the exact status, and change nothing: not the running
configuration, not its files on disk, not the buffer.

One agent serves the whole table (a refused push leaves no trace that could affect the next row), which
keeps the table quick; it starts with version 10 applied so that replays have something to replay.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgpack
import pytest

from agent.core.errors import ConfigError
from agent.demo.localbroker import Mosquitto
from agent.demo.simulator import SimulatedPlc
from agent.protocol.signing import generate_key
from config.loader import parse_config
from tests.e2e.harness import LoopThread, wait_until
from tests.remote.conftest import RemoteGateway

APPLIED_VERSION = 10


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteGateway]:
    root = tmp_path_factory.mktemp("hostile")
    broker = Mosquitto(root / "mosquitto")
    broker.start()
    peers = LoopThread()
    plc = SimulatedPlc(port=_free_port(), registers=8)
    peers.call(plc.start())
    rg = RemoteGateway(root / "gw", broker, [plc.port, _free_port()])
    rg.toml()
    try:
        rg.start()
        applied = rg.push(rg.sign(rg.toml(pipeline_extra="batch_max_rows = 5000"), version=APPLIED_VERSION))
        assert applied["state"] == "applied", applied
        yield rg
    finally:
        rg.stop()
        peers.call(plc.stop())
        peers.close()
        broker.kill()


def _free_port() -> int:
    from agent.demo.localbroker import free_port

    return free_port()


def _running(rg: RemoteGateway) -> dict[str, object]:
    """The state file without the id of the last push seen (which an authentic refused push does update)."""
    return {k: v for k, v in rg.state().items() if k != "last_seen_push"}


def _good_text(rg: RemoteGateway) -> str:
    return rg.toml(pipeline_extra="batch_max_rows = 4000")


def _bad_signature(rg: RemoteGateway) -> bytes:
    payload = rg.sign(_good_text(rg), version=20)
    _, signed, sig = msgpack.unpackb(payload)
    return msgpack.packb([1, signed, bytes([sig[0] ^ 1]) + sig[1:]], use_bin_type=True)


def _unknown_key(rg: RemoteGateway) -> bytes:
    stranger = generate_key(rg.gw.root / "stranger", "stranger")
    return rg.sign(_good_text(rg), version=21, signer=stranger)


def _unsigned(rg: RemoteGateway) -> bytes:
    payload = rg.sign(_good_text(rg), version=22)
    _, signed, _ = msgpack.unpackb(payload)
    return msgpack.packb([1, signed, b""], use_bin_type=True)


def _other_gateway(rg: RemoteGateway) -> bytes:
    return rg.sign(_good_text(rg), version=23, gateway="gw-other")


def _replayed_same_version(rg: RemoteGateway) -> bytes:
    return rg.sign(_good_text(rg), version=APPLIED_VERSION)


def _older_version(rg: RemoteGateway) -> bytes:
    return rg.sign(_good_text(rg), version=3)


def _invalid_toml(rg: RemoteGateway) -> bytes:
    return rg.sign(_good_text(rg) + '\n[oops\nhost = "x"\n', version=24)


def _invalid_config(rg: RemoteGateway) -> bytes:
    return rg.sign(_good_text(rg).replace("window_s = 1", "window_s = 7"), version=25)


def _restart_needed(rg: RemoteGateway) -> bytes:
    return rg.sign(_good_text(rg).replace('max_bytes = "64 MiB"', 'max_bytes = "32 MiB"'), version=26)


def _disables_remote(rg: RemoteGateway) -> bytes:
    return rg.sign(rg.toml(remote=False), version=27)


def _moves_trust_file(rg: RemoteGateway) -> bytes:
    return rg.sign(_good_text(rg).replace(str(rg.trust_file), "/tmp/elsewhere.pub"), version=28)


def _oversized(rg: RemoteGateway) -> bytes:
    return rg.sign(_good_text(rg) + "#" * (1 << 20) + "\n", version=29)


def _not_msgpack(rg: RemoteGateway) -> bytes:
    return b"\x93\x01not a push"


def _wrong_shape(rg: RemoteGateway) -> bytes:
    return msgpack.packb({"toml": _good_text(rg), "version": 99})


def _bad_trust_list(rg: RemoteGateway) -> bytes:
    return rg.sign(_good_text(rg), version=30, trust=["ed25519:AAAA"])


_DAY_MS = 86_400_000


def _expired(rg: RemoteGateway) -> bytes:
    """A push captured four days ago: a gateway whose state was lost must not apply it again."""
    return rg.sign(_good_text(rg), version=31, issued_ms=int(time.time() * 1000) - 4 * _DAY_MS)


def _from_the_future(rg: RemoteGateway) -> bytes:
    return rg.sign(_good_text(rg), version=32, issued_ms=int(time.time() * 1000) + 3_600_000)


def _huge_version(rg: RemoteGateway) -> bytes:
    """Would lock out every later push if accepted (nothing is above 2**63-1); later rows prove it was not."""
    return rg.sign(_good_text(rg), version=2**63 - 1)


def _reads_a_file_out_to_a_listener(rg: RemoteGateway) -> bytes:
    """The exfiltration: the gateway's signing key as the MQTT password, sent to a broker of the push's choice."""
    text = _good_text(rg).replace('port = ', f'username = "x"\npassword_file = "{rg.gw.keys / "gateway.key"}"\n'
                                  'port = ', 1).replace('host = "127.0.0.1"', 'host = "127.0.0.2"', 1)
    return rg.sign(text, version=33)


def _health_on_every_address(rg: RemoteGateway) -> bytes:
    return rg.sign(_good_text(rg).replace('listen = "127.0.0.1:', 'listen = "0.0.0.0:'), version=34)


# (payload maker, the states reported in order, the reasons: exact text, or a prefix ending in "...")
CASES: dict[str, tuple[Callable[[RemoteGateway], bytes], list[str], list[str]]] = {
    "bad signature": (_bad_signature, ["rejected"], ["signature refused: signature does not verify"]),
    "unknown operator key": (_unknown_key, ["rejected"], ["signature refused: unknown key id ..."]),
    "unsigned": (_unsigned, ["rejected"], ["signature refused: signature does not verify"]),
    "other gateway's id": (_other_gateway, ["rejected"], ["addressed to gateway 'gw-other', this is 'gw-test'"]),
    "replayed version": (_replayed_same_version, ["rejected"], [
        f"version {APPLIED_VERSION} is not newer than {APPLIED_VERSION}, the highest this gateway has tried "
        "(a replayed or older push)"]),
    "older version": (_older_version, ["rejected"], [
        f"version 3 is not newer than {APPLIED_VERSION}, the highest this gateway has tried "
        "(a replayed or older push)"]),
    "invalid TOML": (_invalid_toml, ["received", "rejected"], ["push v24:..."]),
    "valid TOML, invalid config": (_invalid_config, ["received", "rejected"], [
        "push v25:..."]),
    "needs a restart": (_restart_needed, ["received", "rejected"], [
        "buffer: cannot change while running (restart the service to apply it)"]),
    "disables remote configuration": (_disables_remote, ["received", "rejected"], [
        "remote_config: a push may not disable remote configuration (only a technician on site may, by "
        "editing the local file)"]),
    "moves the trust file": (_moves_trust_file, ["received", "rejected"], [
        "remote_config.trust_file: a push may not change which file holds the operator keys (rotate keys "
        "with a push that carries a trust list)"]),
    "oversized": (_oversized, ["rejected"], ["push is ..."]),
    "not msgpack": (_not_msgpack, ["rejected"], ["malformed: not a msgpack push (ExtraData)"]),
    "wrong shape": (_wrong_shape, ["rejected"], ["malformed: a push is the array [1, document, signature]"]),
    "bad trust list": (_bad_trust_list, ["rejected"], ["trust[0]: an ed25519 public key has 32 bytes, this one has 3"]),
    "expired": (_expired, ["rejected"], ["expired: issued 3456..."]),
    "issued an hour in the future": (_from_the_future, ["rejected"], ["issued 35..."]),
    "version 2**63-1": (_huge_version, ["rejected"], [
        f"version {2**63 - 1} is more than remote_config.max_version_step..."]),
    "password file read out to a broker of the push's choice": (_reads_a_file_out_to_a_listener, [
        "received", "rejected"], ["mqtt.password_file: a push may not change a file path...",
                                  "mqtt: a push may not move the broker connection to mqtt://127.0.0.2:..."]),
    "health endpoint on every address": (_health_on_every_address, ["received", "rejected"], [
        "health.listen: a push may not open the health endpoint (no password) on 0.0.0.0..."]),
}


# refused before their signature verified: anyone may have sent them, so they are written nowhere
UNAUTHENTICATED = {"bad signature", "unknown operator key", "unsigned", "oversized", "not msgpack", "wrong shape"}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_refused_push_reports_why_and_changes_nothing(gateway: RemoteGateway, case: str) -> None:
    """A hostile or broken push is reported with its exact reasons, and the running configuration, its
    files and the buffer are untouched (the buffer keeps growing from the same file). Only an authentic one
    (its signature verified) joins the history; the others leave history.json as it was."""
    rg = gateway
    make, states, reasons = CASES[case]
    payload = make(rg)
    rg.toml()  # the technician's file is whatever the maker wrote last; put the original back
    state, good, inode = _running(rg), rg.good_text(), rg.buffer_inode()
    applied = len(rg.applied_events())
    head = rg.buffer_head()
    history = rg.history_file.read_bytes()

    status = rg.push(payload)

    assert status["_all"] == states
    assert len(status["reasons"]) == len(reasons), status["reasons"]
    for got, want in zip(status["reasons"], reasons, strict=True):
        if want.endswith("..."):
            assert got.startswith(want[:-3]), got
        else:
            assert got == want
    assert (_running(rg), rg.good_text(), rg.buffer_inode()) == (state, good, inode)
    assert len(rg.applied_events()) == applied
    if case in UNAUTHENTICATED:
        assert rg.history_file.read_bytes() == history
    else:
        assert rg.history()[-1]["state"] == "rejected"
        assert rg.history()[-1]["push"] == status["push"]
    wait_until(lambda: rg.buffer_head() > head, 30, "the agent to keep appending to the same buffer")


def test_invalid_config_reports_every_problem_with_its_line(gateway: RemoteGateway) -> None:
    """A push with several mistakes lists each, located in the pushed text, exactly as the validator does."""
    rg = gateway
    text = _good_text(rg).replace("window_s = 1", "window_s = 7").replace("keepalive_s = 5", "keepalive_s = 1")
    rg.toml()
    with pytest.raises(ConfigError) as validated:
        parse_config(text, "push v40")

    status = rg.push(rg.sign(text, version=40))

    assert status["state"] == "rejected"
    assert len(status["reasons"]) == 2
    assert status["reasons"] == [str(p) for p in validated.value.problems]


def test_repeated_delivery_of_a_push_gets_its_outcome_again(gateway: RemoteGateway, tmp_path: Path) -> None:
    """The same push bytes delivered again (retained copy, QoS 1 redelivery, the operator sending it twice) are
    not handled again, but the operator's tool gets an answer at once: the recorded outcome, marked repeat."""
    rg = gateway
    payload = rg.sign(_good_text(rg), version=3)
    rg.toml()
    first = rg.push(payload)
    entries = len(rg.history())

    again = rg.push(payload, wait_s=30.0)

    assert first["state"] == "rejected"
    assert (again["_all"], again["repeat"], again["reasons"]) == (["rejected"], True, first["reasons"])
    assert len(rg.history()) == entries


def test_a_refused_push_sends_nothing_to_the_broker_it_names(gateway: RemoteGateway) -> None:
    """A push aiming the password file at the gateway key and the broker at a listener of its choosing: the
    listener never sees a connection, so no file content can leave in MQTT CONNECT."""
    import socket

    rg = gateway
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        listener.settimeout(5.0)
        port = listener.getsockname()[1]
        text = _good_text(rg).replace("port = ", f'username = "x"\npassword_file = "{rg.gw.keys / "gateway.key"}"'
                                      "\nport = ", 1).replace(f"port = {rg.broker.port}", f"port = {port}", 1)
        rg.toml()
        status = rg.push(rg.sign(text, version=35))
        assert status["state"] == "rejected", status
        with pytest.raises(TimeoutError):
            listener.accept()


def test_a_flood_of_pushes_gets_a_status_each(gateway: RemoteGateway) -> None:
    """While one push sits in its health window, a burst of other signed pushes arrives: more than the gateway
    queues. Each gets a final status all the same (the queued ones their own outcome, the rest 'busy'), so no
    operator's tool is left waiting for nothing. (Unsigned ones never take a queue slot: test_push_flood.)"""
    import asyncio

    import aiomqtt

    from agent.protocol.push import push_id
    from agent.remote.service import BUSY
    from backend.operator import read_status

    rg = gateway
    slow = rg.sign(rg.toml(devices={"plc1": rg.plc_ports[0], "plc9": rg.plc_ports[1]}), version=60)
    rg.toml()
    burst = [_older_version(rg) for _ in range(16)]
    rg.toml()
    pushes = {push_id(p) for p in [slow, *burst]}
    topic = f"mine/{rg.gw.id}/config"

    async def flood() -> dict[str, dict[str, object]]:
        finals: dict[str, dict[str, object]] = {}
        async with aiomqtt.Client("127.0.0.1", rg.broker.port) as client:
            await client.subscribe(f"{topic}/status", qos=1)
            await client.publish(topic, slow, qos=1)
            await asyncio.sleep(1.0)  # the slow one is in its health window
            for payload in burst:
                await client.publish(topic, payload, qos=1)
            async with asyncio.timeout(60):
                async for message in client.messages:
                    status = read_status(message.payload, key=rg.gateway_key)
                    assert status is not None, message.payload
                    assert status["verified"], status
                    if status.get("push") in pushes and status["state"] in ("rejected", "applied", "rolled_back"):
                        finals[status["push"]] = status
                        if len(finals) == len(pushes):
                            break
            await client.publish(topic, b"", qos=1, retain=True)
        return finals

    finals = asyncio.run(flood())

    assert finals.keys() == pushes
    busy = [p for p, s in finals.items() if s["reasons"] == [BUSY]]
    assert busy, "the burst never filled the queue: this test proved nothing"
    assert finals[push_id(slow)]["state"] == "rolled_back"


FORGERIES: dict[str, Callable[[int], bytes]] = {
    "not msgpack": lambda i: b"forged-%d" % i,
    "wrong shape": lambda i: msgpack.packb({"toml": "x", "version": i}),
    "no signature": lambda i: msgpack.packb([1, msgpack.packb({"gw": "gw-test", "version": i}), b""],
                                             use_bin_type=True),
    "bad signature": lambda i: msgpack.packb([1, msgpack.packb({"alg": "ed25519", "kid": "k", "n": i}),
                                              bytes(64)], use_bin_type=True),
}


def test_forged_pushes_write_nothing_and_keep_genuine_outcomes(gateway: RemoteGateway) -> None:
    """More forged pushes than the history holds: history.json is not rewritten, and a genuine push delivered
    again afterwards still gets its recorded outcome (not "already handled")."""
    import asyncio

    import aiomqtt

    from agent.protocol.push import push_id

    rg = gateway
    genuine = _older_version(rg)
    rg.toml()
    first = rg.push(genuine)
    assert first["state"] == "rejected"
    history = rg.history_file.read_bytes()
    mtime = rg.history_file.stat().st_mtime_ns
    forged = [make(i) for i in range(80) for make in FORGERIES.values()]  # 320 > the 200 kept
    assert len({push_id(p) for p in forged}) == len(forged)

    async def send() -> None:
        async with aiomqtt.Client("127.0.0.1", rg.broker.port) as client:
            for payload in forged:
                await client.publish(f"mine/{rg.gw.id}/config", payload, qos=1)

    asyncio.run(send())
    again = rg.push(genuine, wait_s=30.0)  # handled after every forgery: one channel, in order

    assert (again["repeat"], again["state"], again["reasons"]) == (True, "rejected", first["reasons"])
    assert rg.history_file.read_bytes() == history
    assert rg.history_file.stat().st_mtime_ns == mtime
