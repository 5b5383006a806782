"""Remote configuration on the gateway: the MQTT channel that receives signed pushes, the service that
applies them with a health window and rolls them back, and the state kept on disk between restarts.

The operator's side (signing and sending a push) is the backend's (``backend.operator``).
"""
