"""Remote configuration timings: push to "applied" for a 500-tag configuration, and time to automatic rollback.

Run from the worktree root: ``python3 bench/remote_config.py [--rounds 5] [--window 5]``. It starts a real
Mosquitto on a free loopback port, a simulated PLC with 500 registers, and the agent as a process (exactly as
in production), then pushes signed configurations with the operator tool's own code and prints:

* push -> applied: a good push that changes the 500-tag device (so that driver restarts and must read good
  values again), measured by the operator from publishing to receiving "applied"; also the gateway's own
  received -> applied part.
* push -> rolled_back: a push adding a device nobody answers for (fails its health window) and a push that
  points MQTT at a dead port (the uplink cannot reconnect), each with ``health_window_s = --window``.

Figures depend on the machine (and on its load): read them as an order of magnitude and compare runs made here.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.demo.localbroker import Mosquitto, free_port
from agent.demo.simulator import SimulatedPlc
from agent.protocol.push import push_id, sign_push
from agent.protocol.signing import TrustStore, generate_key
from backend.operator import push_and_wait
from backend.receiver import BrokerAddress
from tests.e2e.harness import Gateway, LoopThread, agent_process, log_events, wait_until

TAGS = 500


def device(name: str, port: int, *, timeout_s: float, tags: int) -> str:
    out = [f"""[devices.{name}]
protocol = "modbus-tcp"
host = "127.0.0.1"
port = {port}
poll_interval_s = 0.5
timeout_s = {timeout_s}
"""]
    out += [f'[[devices.{name}.tags]]\nname = "t{i}"\naddress = {i}\ntype = "uint16"\n' for i in range(tags)]
    return "\n".join(out)


# A port nobody listens on, which the local file allows a push to move the broker to (a push may move the broker
# only to an entry of remote_config.allowed_brokers).
DEAD_BROKER_PORT = free_port()


def config(gw: Gateway, trust: Path, window: float, *, mqtt_port: int, devices: str) -> str:
    remote = (f'[remote_config]\ntrust_file = "{trust}"\nhealth_window_s = {window}\n'
              f'allowed_brokers = ["mqtt://127.0.0.1:{DEAD_BROKER_PORT}"]\n\n')
    gw.write_config(mqtt_port=mqtt_port, devices=remote + devices, window_s=10, batch_interval_s=1.0)
    return gw.config_path.read_text()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=5, help="good pushes to time (default 5)")
    parser.add_argument("--window", type=float, default=5.0, help="health window of the bad pushes, seconds")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-remote-") as tmp:
        root = Path(tmp)
        broker = Mosquitto(root / "mosquitto")
        broker.start()
        peers = LoopThread()
        plc = SimulatedPlc(port=free_port(), registers=TAGS)
        peers.call(plc.start())
        gw = Gateway(root / "gw")
        operator = generate_key(root / "operator", "operator")
        trust = root / "operator.pub"
        trust.write_text(operator.public_text + "\n")
        address = BrokerAddress("127.0.0.1", broker.port, tls=False)
        version = 0

        def push(text: str) -> tuple[float, dict[str, object]]:
            nonlocal version
            version += 1
            payload = sign_push(operator, gateway=gw.id, version=version, toml=text,
                                issued_ms=int(time.time() * 1000))
            began = time.perf_counter()
            final = asyncio.run(push_and_wait(address, payload, prefix="mine", gateway=gw.id,
                                              gateway_key=TrustStore({"gw": gw.signer.public_raw}),
                                              push=push_id(payload), wait_s=120))
            took = time.perf_counter() - began
            assert final is not None, "no outcome"
            return took, final

        base = config(gw, trust, args.window, mqtt_port=broker.port,
                      devices=device("plc1", plc.port, timeout_s=1.0, tags=TAGS))
        agent = agent_process(gw)
        agent.start()
        try:
            wait_until(lambda: log_events(agent.log, "config_channel_connected"), 90, "the agent to start")
            good_total, good_gateway = [], []
            for i in range(args.rounds):
                text = config(gw, trust, args.window, mqtt_port=broker.port,
                              devices=device("plc1", plc.port, timeout_s=1.0 + (i + 1) / 10, tags=TAGS))
                took, final = push(text)
                assert final["state"] == "applied", final
                good_total.append(took)
                good_gateway.append((int(final["ts"]) - int(final["received_ms"])) / 1000)  # type: ignore[call-overload]
            gw.config_path.write_text(base)

            dead = config(gw, trust, args.window, mqtt_port=broker.port,
                          devices=device("plc1", plc.port, timeout_s=1.0 + (args.rounds / 10), tags=TAGS)
                          + "\n" + device("dead", free_port(), timeout_s=0.5, tags=5))
            gw.config_path.write_text(base)
            dead_took, dead_final = push(dead)
            assert dead_final["state"] == "rolled_back", dead_final

            broken = config(gw, trust, args.window, mqtt_port=DEAD_BROKER_PORT,
                            devices=device("plc1", plc.port, timeout_s=1.0 + (args.rounds / 10), tags=TAGS))
            gw.config_path.write_text(base)
            mqtt_took, mqtt_final = push(broken)
            assert mqtt_final["state"] == "rolled_back", mqtt_final
        finally:
            agent.terminate()
            peers.call(plc.stop())
            peers.close()
            broker.kill()

    print(f"remote configuration, {TAGS}-tag Modbus device, agent as a process, Mosquitto on loopback")
    print(f"  push -> applied (device restarted, health passed), {args.rounds} pushes:")
    print(f"    operator's view   median {statistics.median(good_total) * 1000:7.0f} ms   "
          f"max {max(good_total) * 1000:7.0f} ms")
    print(f"    gateway received -> applied  median {statistics.median(good_gateway) * 1000:7.0f} ms")
    print(f"  push -> rolled_back, health window {args.window:g} s:")
    print(f"    unreachable device          {dead_took * 1000:7.0f} ms   ({dead_final['reasons']})")
    print(f"    MQTT pointed at a dead port {mqtt_took * 1000:7.0f} ms   (status sent after rollback)")


if __name__ == "__main__":
    main()
