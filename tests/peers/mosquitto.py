"""The tests' broker is the same launcher the demo uses."""

from agent.demo.localbroker import Mosquitto, free_port, wait_port

__all__ = ["Mosquitto", "free_port", "wait_port"]
