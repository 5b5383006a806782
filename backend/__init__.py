"""The provincial side: the receiver that verifies, stores and acknowledges batches, and the operator's tool
for signed configuration pushes.

It shares the protocol (``agent.protocol``) and the ground floor (``agent.core``) with the gateway and
nothing else: the gateway process never imports this package, and this package never imports the gateway's
runtime.
"""
