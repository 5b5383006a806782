"""The protocol between a gateway and the provincial backend, one package both ends import.

``wire``: the batch frame (header, hash chain, Ed25519 signature, compressed body) and the decoding of its body;
``tables``: the body's tables and their columns; ``limits``: the bounds every decoder enforces; ``signing``:
keys and trust files; ``push``: signed remote configuration pushes; ``mqtt``: the MQTT connection (broker URLs,
password files, TLS, the client, and the one place that knows aiomqtt's internals). It stands on the ground
floor (``agent.core``) only, so a second implementation of either end needs nothing else of the agent.
"""
