"""Configuration: the TOML schema (``config.schema``), loading and validation (``config.loader``), examples
(``config/examples/``) and the JSON Schema for editors (``config/mine-agent.schema.json``).

Nothing is imported here on purpose: driver packages import ``agent.core.fields`` while ``config.schema``
imports the drivers' device models, and an eager ``__init__`` would make that a cycle.
"""
