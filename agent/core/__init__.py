"""The ground floor: the vocabulary every part of the project shares.

Errors (one tree rooted in ``AgentError``), samples and their quality, the injected clock, backoff, and the
cancellation helpers that behave alike on every supported Python. It imports nothing of the project: drivers,
the buffer, configuration, the pipeline, the gateway process and the backend all stand on it.
"""
