"""Configuration field types shared by the schema and the drivers' own device models.

Use these instead of bare ``int``/``str`` so every model gets the same rules and, through
``config.explain``, the same error wording: a value out of range reads ``out of range (got 70000; allowed:
1-65535)`` whichever section it is in.

It is on the ground floor, not in ``config/``, because the drivers' device models use it and ``config.schema``
composes those models: inside ``config/`` it made config and drivers import each other.
"""

from __future__ import annotations

__all__ = [
    "BROKER_URL_PATTERN",
    "DEVICE_GLOB_PATTERN",
    "FULL_TAG_PATTERN",
    "LISTEN_PATTERN",
    "NAME_PATTERN",
    "PATTERN_HELP",
    "STRICT",
    "ConfigValueError",
    "DevicePath",
    "LocalDevice",
    "Name",
    "Port",
    "Seconds",
    "StrictModel",
    "TagCatalogFields",
    "TagText",
    "check_plausible_range",
]

from collections.abc import Sequence
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"
TOPIC_LEVEL_PATTERN = r"^[^#+\s]+$"
FULL_TAG_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,63}\.[A-Za-z][A-Za-z0-9_-]{0,63}$"
LISTEN_PATTERN = r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$"
BROKER_URL_PATTERN = r"^mqtts?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$"
DEVICE_GLOB_PATTERN = r"^/\S*$"

# What a technician should type, for each regular expression used in a model. Error messages show this
# text instead of the expression; add an entry when a model introduces a new pattern.
PATTERN_HELP: dict[str, str] = {
    NAME_PATTERN: "letters, digits, '_' and '-', starting with a letter, at most 64 characters",
    TOPIC_LEVEL_PATTERN: "text without spaces, '#' or '+'",
    FULL_TAG_PATTERN: "'<device>.<tag>', each part letters, digits, '_' and '-', starting with a letter",
    LISTEN_PATTERN: "HOST:PORT, e.g. 127.0.0.1:9108 or [::1]:9108",
    BROKER_URL_PATTERN: "mqtt://HOST:PORT or mqtts://HOST:PORT",
    DEVICE_GLOB_PATTERN: "an absolute path or glob pattern without spaces, e.g. /dev/ttyUSB*",
}


#: Unknown keys are errors (a typo must never be silently ignored) and ``inf``/``nan`` (valid TOML floats)
#: are refused: no setting means anything with them. Models get it through :class:`StrictModel`; the
#: slotted dataclasses used where a config holds thousands of one item (tags) are declared
#: ``@dataclass(frozen=True, slots=True, kw_only=True, config=STRICT)``.
STRICT = ConfigDict(extra="forbid", str_strip_whitespace=False, allow_inf_nan=False)


class StrictModel(BaseModel):
    """A configuration table with the :data:`STRICT` rules, immutable once loaded."""

    model_config = ConfigDict(**STRICT, frozen=True)


class ConfigValueError(ValueError):
    """Raised by a model validator to blame one key of the model rather than the whole table.

    ``key`` is relative to the model being validated, e.g. ``("tags", 3, "name")`` in a device model, so the
    message points at the line of that key; ``got`` and ``allowed`` complete the standard wording
    ``<message> (got <got>; allowed: <allowed>)``.
    """

    def __init__(
        self,
        message: str,
        *,
        key: Sequence[str | int] = (),
        got: str | None = None,
        allowed: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.key = tuple(key)
        self.got = got
        self.allowed = allowed


Name = Annotated[
    str,
    Field(
        pattern=NAME_PATTERN,
        description="Letters, digits, '_' and '-', starting with a letter; at most 64 characters.",
    ),
]
class LocalDevice:
    """Marks a setting that names a device node of this machine (a serial port), so the rules of remote
    configuration (agent.remote.guard) find it by its type, as they find every ``Path`` setting."""

    def __repr__(self) -> str:
        return "LocalDevice()"


#: A device node such as ``/dev/ttyUSB0``: text (pyserial also takes URLs), marked :class:`LocalDevice`.
DevicePath = Annotated[str, Field(min_length=1), LocalDevice()]
Port = Annotated[int, Field(ge=1, le=65535, description="TCP port, 1-65535.")]
TagText = Annotated[str, Field(min_length=1, max_length=1024, description="Text of 1 to 1024 characters.")]
"""A tag's description or location: sent to the backend in the tag catalogue, so bounded."""
Seconds = Annotated[float, Field(gt=0, le=86400, description="Seconds, more than 0 and at most 86400.")]


def check_plausible_range(low: float | None, high: float | None) -> None:
    """A tag's plausible range (``low``/``high``, each optional) must not be empty."""
    if low is not None and high is not None and low > high:
        raise ConfigValueError("low is above high", key=("low",), got=f"{low:g} > {high:g}", allowed="low <= high")


class TagCatalogFields(StrictModel):
    """What every kind of tag says about itself for the tag catalogue (docs/protocol.md, ``catalog`` table)
    beside its unit: one definition the driver tag models and calculated tags inherit, so the catalogue's
    columns mean the same whatever produced the tag."""

    description: TagText | None = Field(
        None, description="What the tag measures, for people reading the data (sent in the tag catalogue)."
    )
    location: TagText | None = Field(
        None, description="Where the sensor is, e.g. 'north heading, level -320' (sent in the tag catalogue)."
    )
    low: float | None = Field(None, description="Lowest plausible value, in the tag's unit (tag catalogue).")
    high: float | None = Field(None, description="Highest plausible value, in the tag's unit (tag catalogue).")

    @model_validator(mode="after")
    def _plausible_range(self) -> Self:
        check_plausible_range(self.low, self.high)
        return self
