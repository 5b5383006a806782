"""``mine-agent demo``: the whole path on one machine, with readings printed as they arrive.

It starts a simulated PLC (methane, CO, oxygen, sump level, fan speed on Modbus TCP), a local MQTT broker
(Mosquitto when installed, otherwise the embedded amqtt broker), the agent itself with a freshly made
gateway key, and the reference receiver, which verifies every signature and the hash chain and acknowledges
what it stored in acks signed by a freshly made archive key, whose public line the agent is given: the agent
runs in the default end-to-end acknowledgement mode and deletes a batch only on that ack. Every few
seconds it prints the newest window of each tag as the receiver stored it, and the receiver's account of
batches, duplicates, rejections and missing ranges. Ctrl-C stops everything; the files stay in the demo
directory for a look (configuration, buffer, receiver database).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import signal
import tempfile
from pathlib import Path
from typing import Any

from agent.core.cancellation import TaskGroup, timeout
from agent.core.errors import AgentError
from agent.demo.localbroker import Mosquitto, free_port, mosquitto_binary
from agent.demo.simulator import DemoSignals, SimulatedPlc
from agent.protocol.signing import generate_key, load_signer
from agent.runtime import Agent
from agent.service.logs import configure_logging
from backend.receiver import Receiver, ReceiverStore
from backend.registry import entry_for
from config.loader import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", type=Path, default=None,
                        help="where to keep the demo's files (default: a new temporary directory)")
    parser.add_argument("--window", type=int, default=5, help="aggregation window in seconds (default 5)")
    parser.add_argument("--seconds", type=float, default=0,
                        help="stop by itself after this long (default: run until Ctrl-C)")
    parser.add_argument("--broker", choices=["auto", "mosquitto", "embedded"], default="auto",
                        help="which local broker to start (default: Mosquitto if installed, else embedded)")


def main(args: argparse.Namespace) -> int:
    if 86400 % args.window:
        raise AgentError(f"--window {args.window} must divide a day (e.g. 5, 10, 60)")
    configure_logging("console", "warning")
    root = args.dir or Path(tempfile.mkdtemp(prefix="mine-agent-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    return asyncio.run(_demo(root, args))


class _EmbeddedBroker:
    """amqtt on loopback, for machines without Mosquitto."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._broker: Any = None

    async def start(self) -> None:
        try:
            from amqtt.broker import Broker
        except ImportError:
            raise AgentError("no MQTT broker available", hint="apt-get install mosquitto, or pip install "
                             "'mine-edge-agent[demo]' for the embedded one") from None
        logging.getLogger("amqtt").setLevel(logging.ERROR)
        logging.getLogger("transitions").setLevel(logging.ERROR)
        self._broker = Broker({"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}}})
        await self._broker.start()

    async def stop(self) -> None:
        if self._broker is not None:
            await self._broker.shutdown()


def _write_config(root: Path, port: int, plc_port: int, window: int, archive_keys: Path) -> Path:
    tags = "\n".join(
        f'[[devices.plc1.tags]]\nname = "{name}"\naddress = {address}\ntype = "{dtype}"\nunit = "{unit}"\n'
        f'{"raw = true" if name == "ch4" else ""}\n'
        for name, (address, dtype, unit, _) in DemoSignals.TAGS.items()
    )
    path = root / "agent.toml"
    path.write_text(f"""# Written by 'mine-agent demo'. See docs/config.md for every key.
[gateway]
id = "gw-demo"
key_file = "{root / 'keys' / 'gateway.key'}"
state_dir = "{root / 'state'}"

[mqtt]
host = "127.0.0.1"
port = {port}
topic_prefix = "mine"
keepalive_s = 10
publish_timeout_s = 5
archive_keys_file = "{archive_keys}"   # the receiver's archive key: its signed acks delete batches

[pipeline]
window_s = {window}
batch_interval_s = 1.0

[devices.plc1]
protocol = "modbus-tcp"
host = "127.0.0.1"
port = {plc_port}
poll_interval_s = 1.0
timeout_s = 1.0

{tags}""")
    return path


def _print_latest(store: ReceiverStore) -> None:
    latest: dict[str, dict[str, Any]] = {}
    for row in store.records(gw="gw-demo", limit=200):
        if row["table"] == "win" and row["tag"] not in latest:
            latest[row["tag"]] = row
    report = store.report()["gateways"].get("gw-demo", {})
    clock = dt.datetime.now(dt.UTC).strftime("%H:%M:%S")
    print(f"\n[{clock} UTC] receiver: {report.get('batches', 0)} batches, {report.get('records', 0)} records, "
          f"{report.get('duplicates', 0)} duplicates, {len(report.get('rejected', []))} rejected, "
          f"missing {report.get('missing', [])}")
    if not latest:
        print("  (waiting for the first window to close)")
        return
    print(f"  {'tag':<24}{'window (UTC)':<14}{'n':>4}{'min':>10}{'mean':>10}{'max':>10}{'last':>10}")
    for tag in sorted(latest):
        w = latest[tag]
        start = dt.datetime.fromtimestamp(w["start"] / 1000, dt.UTC).strftime("%H:%M:%S")
        unit = DemoSignals.TAGS.get(tag.split(".", 1)[1], ("", "", "", ""))[2]

        def fmt(v: Any) -> str:
            return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)

        print(f"  {tag + ' [' + unit + ']':<24}{start:<14}{w['count']:>4}{fmt(w['min']):>10}{fmt(w['mean']):>10}"
              f"{fmt(w['max']):>10}{fmt(w['last']):>10}")


async def _demo(root: Path, args: argparse.Namespace) -> int:
    keys = root / "keys"
    signer = load_signer(keys / "gateway.key") if (keys / "gateway.key").exists() else generate_key(keys)
    archive_dir = root / "archive"
    archive = load_signer(archive_dir / "archive.key") if (archive_dir / "archive.key").exists() \
        else generate_key(archive_dir, "archive")
    archive_keys = root / "archive.keys"
    archive_keys.write_text(f"# the demo receiver's archive key (mine-backend keys archive-public)\n"
                            f"{archive.public_text}\n")

    port = free_port()
    use_mosquitto = args.broker == "mosquitto" or (args.broker == "auto" and mosquitto_binary() is not None)
    broker: Any = Mosquitto(root / "mosquitto", port=port) if use_mosquitto else _EmbeddedBroker(port)
    plc = SimulatedPlc(port=free_port(), registers=16)
    config_path = _write_config(root, port, plc.port, args.window, archive_keys)
    config = load_config(config_path)

    print(f"demo directory: {root}")
    print(f"broker:         {'Mosquitto' if use_mosquitto else 'embedded (amqtt)'} on 127.0.0.1:{port}")
    print(f"simulated PLC:  Modbus TCP on 127.0.0.1:{plc.port}")
    print(f"gateway key id: {signer.kid}; archive key id: {archive.kid}; configuration: {config_path}")
    print("Ctrl-C stops everything.")

    if use_mosquitto:
        await asyncio.to_thread(broker.start)
    else:
        await broker.start()
    await plc.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    agent = Agent(config, signer=signer)
    store = ReceiverStore(root / "receiver.sqlite")
    if store.registry.get(signer.kid) is None:  # the demo gateway's key speaks for gw-demo, and only for it
        store.registry.register(entry_for("gw-demo", signer.public_text, note="demo gateway"),
                                now_ms=int(store.clock.time() * 1000))
    view = ReceiverStore(root / "receiver.sqlite")
    receiver = Receiver(f"mqtt://127.0.0.1:{port}", store, client_id="mine-demo-receiver",
                        ack_signer=archive)
    started = loop.time()
    try:
        async with TaskGroup() as tg:
            tasks = [
                tg.create_task(DemoSignals(plc).run(0.5), name="demo.signals"),
                tg.create_task(receiver.run(), name="demo.receiver"),
                tg.create_task(agent.run(), name="demo.agent"),
            ]
            deadline = started + args.seconds if args.seconds else None
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    async with timeout(args.window):
                        await stop.wait()
                _print_latest(view)
                if deadline is not None and loop.time() >= deadline:
                    break
            agent.stop()
            await tasks[2]
            await asyncio.sleep(1.0)  # let the receiver store what is in flight
            for task in tasks[:2]:
                task.cancel()
    finally:
        await plc.stop()
        if use_mosquitto:
            await asyncio.to_thread(broker.kill)
        else:
            await broker.stop()
        _print_latest(view)
        view.close()
        store.close()
    print(f"\nstopped. Files are in {root}: agent.toml, state/buffer.sqlite, receiver.sqlite")
    print(f"report: mine-backend receive --db {root / 'receiver.sqlite'} --report")
    return 0
