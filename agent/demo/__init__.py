"""The demo: a simulated PLC, an embedded broker, and the command that runs them with the agent and a receiver.

The one part of the gateway package that uses the backend (its receiver), by design: it shows the whole spine
on one machine. The import contracts name this exception.
"""
