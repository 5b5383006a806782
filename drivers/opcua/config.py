"""Device, security and tag settings of the OPC UA driver (see sample.toml beside this file).

This module must not import asyncua: the schema imports it on every gateway, and asyncua costs about
0.5 s and 40 MB. NodeIds and browse paths are therefore checked here by their text syntax only; whether
the node exists is known only once connected, and a missing node becomes a bad sample with the server's
status name as reason.
"""

from __future__ import annotations

__all__ = [
    "DeadbandKind",
    "IdentityKind",
    "OpcUaDevice",
    "OpcUaIdentity",
    "OpcUaSecurity",
    "OpcUaTag",
    "SecurityMode",
    "SecurityPolicy",
    "TagMode",
    "TimestampSource",
    "parse_browse_path",
]

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from agent.core.fields import Name, Seconds, StrictModel, TagCatalogFields

SecurityPolicy = Literal["None", "Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss"]
SecurityMode = Literal["Sign", "SignAndEncrypt"]
IdentityKind = Literal["anonymous", "username", "certificate"]
TagMode = Literal["subscribe", "poll"]
DeadbandKind = Literal["none", "absolute", "percent"]
TimestampSource = Literal["source", "server", "gateway"]

# OPC UA Part 6 §5.3.1.10 string form: optional ns=<index>; or nsu=<uri>; then i=, s=, g= or b=.
_NODE_ID = re.compile(
    r"^(?:ns=\d{1,5};|nsu=[^;]+;)?"
    r"(?:i=\d{1,10}|s=.+|g=[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}|b=[A-Za-z0-9+/=]+)$",
    re.DOTALL,
)
# One browse path element: an optional namespace index and a browse name, e.g. "2:Hoist" or "Objects".
_PATH_ELEMENT = re.compile(r"^(?:(\d{1,5}):)?([^/:]+)$")

NAME_MAX = 64
DEFAULT_PKI_DIR = Path("/var/lib/mine-agent/opcua-pki")
_KEY_SUFFIXES = (".pem", ".der")


def parse_browse_path(path: str) -> list[tuple[int, str]]:
    """Split ``"Objects/2:Hoist/2:Speed"`` into ``[(0, "Objects"), (2, "Hoist"), (2, "Speed")]``.

    The path starts at the Root folder; an element without ``ns:`` is in namespace 0. Raises ValueError
    with the offending element.
    """
    elements = list(path.strip("/").split("/"))
    if not path.strip("/"):
        raise ValueError("browse path is empty")
    parsed: list[tuple[int, str]] = []
    for element in elements:
        match = _PATH_ELEMENT.match(element)
        if match is None:
            raise ValueError(f"browse path element {element!r} is not '<name>' or '<ns index>:<name>'")
        parsed.append((int(match.group(1) or 0), match.group(2)))
    return parsed


def _check_key_suffix(path: Path | None, what: str) -> None:
    # asyncua picks PEM or DER by file suffix (anything but .pem is read as DER): a PEM key named
    # "client.key" fails later with an opaque "ASN.1 parsing error", so refuse it here with the fix.
    if path is not None and path.suffix.lower() not in _KEY_SUFFIXES:
        raise ValueError(
            f"{what} {str(path)!r} must end in .pem (PEM) or .der (DER): the format is chosen by suffix;"
            " rename the file"
        )


class OpcUaTag(TagCatalogFields):
    name: Name
    node: str | None = Field(None, description="NodeId: ns=2;s=Hoist.Speed, ns=2;i=1001, nsu=<uri>;s=...")
    path: str | None = Field(None, description="Browse path from Root: Objects/2:Hoist/2:Speed.")
    unit: str | None = Field(None, description="Engineering unit, for documentation and displays.")
    raw: bool = Field(False, description="Also send every sample as received, not only window aggregates.")
    mode: TagMode = Field("subscribe", description="subscribe: the server reports changes; poll: read it.")
    publishing_interval_s: Seconds | None = Field(
        None, description="Subscription publishing interval; default the device's. Tags are grouped by it."
    )
    sampling_interval_s: Annotated[float, Field(ge=0, le=86400)] | None = Field(
        None,
        description="How often the server samples the value; default = publishing interval; 0 = fastest.",
    )
    queue_size: Annotated[int, Field(ge=1, le=10000)] = Field(
        1, description="Server-side queue per item; >1 keeps every change between two publishes."
    )
    deadband: DeadbandKind = Field("none", description="Data-change filter: none, absolute or percent.")
    deadband_value: Annotated[float, Field(ge=0)] = Field(
        0.0, description="Absolute change in engineering units, or percent (0-100) of the EURange."
    )
    poll_interval_s: Seconds | None = Field(None, description="For mode=poll; default the device's.")

    @field_validator("node")
    @classmethod
    def _node_syntax(cls, value: str | None) -> str | None:
        if value is not None and not _NODE_ID.match(value):
            raise ValueError(
                f"{value!r} is not a NodeId; write e.g. 'ns=2;s=Hoist.Speed', 'ns=2;i=1001',"
                " 'nsu=urn:plc;s=Speed' or 'i=2258' (mine-agent browse prints them)"
            )
        return value

    @field_validator("path")
    @classmethod
    def _path_syntax(cls, value: str | None) -> str | None:
        if value is not None:
            parse_browse_path(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> OpcUaTag:
        if (self.node is None) == (self.path is None):
            raise ValueError("set exactly one of node (a NodeId) or path (a browse path)")
        if self.deadband != "none" and self.deadband_value <= 0:
            raise ValueError(f"deadband {self.deadband!r} needs deadband_value > 0")
        if self.deadband == "percent" and self.deadband_value > 100:
            raise ValueError(f"percent deadband_value {self.deadband_value} must be at most 100")
        if self.mode == "poll":
            for key in ("publishing_interval_s", "sampling_interval_s", "deadband_value"):
                if key in self.model_fields_set:
                    raise ValueError(f"{key} applies to mode 'subscribe' only; this tag has mode 'poll'")
            if self.deadband != "none" or "queue_size" in self.model_fields_set:
                raise ValueError(
                    "deadband and queue_size apply to mode 'subscribe' only; this tag has mode 'poll'"
                )
        elif "poll_interval_s" in self.model_fields_set:
            raise ValueError("poll_interval_s applies to mode 'poll' only; this tag has mode 'subscribe'")
        return self


class OpcUaSecurity(StrictModel):
    policy: SecurityPolicy = Field(
        "None", description="None, Basic256Sha256, Aes128Sha256RsaOaep, Aes256Sha256RsaPss."
    )
    mode: SecurityMode | None = Field(
        None, description="Sign or SignAndEncrypt; required unless policy is None."
    )
    pki_dir: Path = Field(
        DEFAULT_PKI_DIR,
        description="own/ (client cert.der, key.pem), trusted/ (server certs), rejected/ (untrusted seen).",
    )

    @model_validator(mode="after")
    def _mode_matches_policy(self) -> OpcUaSecurity:
        if self.policy == "None" and self.mode is not None:
            raise ValueError(f"mode {self.mode!r} needs a security policy; policy 'None' has no Sign modes")
        if self.policy != "None" and self.mode is None:
            raise ValueError(f"policy {self.policy!r} needs mode = 'Sign' or 'SignAndEncrypt'")
        return self


class OpcUaIdentity(StrictModel):
    kind: IdentityKind = Field("anonymous", description="anonymous, username or certificate.")
    username: str | None = None
    password: SecretStr | None = Field(None, description="Prefer password_file; never logged.")
    password_file: Path | None = Field(None, description="File whose first line is the password.")
    cert_file: Path | None = Field(None, description="User certificate (.der or .pem) for kind certificate.")
    key_file: Path | None = Field(None, description="Its private key (.pem or .der).")

    @model_validator(mode="after")
    def _complete(self) -> OpcUaIdentity:
        if self.kind == "username":
            if not self.username:
                raise ValueError("identity kind 'username' needs username")
            if (self.password is None) == (self.password_file is None):
                raise ValueError("identity kind 'username' needs exactly one of password or password_file")
        elif self.username or self.password is not None or self.password_file is not None:
            raise ValueError(f"username/password are used with kind 'username' only, not {self.kind!r}")
        if self.kind == "certificate":
            if self.cert_file is None or self.key_file is None:
                raise ValueError("identity kind 'certificate' needs cert_file and key_file")
            _check_key_suffix(self.cert_file, "cert_file")
            _check_key_suffix(self.key_file, "key_file")
        elif self.cert_file is not None or self.key_file is not None:
            raise ValueError(f"cert_file/key_file are used with kind 'certificate' only, not {self.kind!r}")
        return self


class OpcUaDevice(StrictModel):
    protocol: Literal["opcua"]
    url: str = Field(pattern=r"^opc\.tcp://[^/\s]+", description="Endpoint, e.g. opc.tcp://10.0.0.5:4840.")
    security: OpcUaSecurity = OpcUaSecurity()
    identity: OpcUaIdentity = OpcUaIdentity()
    timeout_s: Seconds = Field(5.0, description="Per-request timeout; also bounds connecting.")
    session_timeout_s: Annotated[float, Field(ge=10, le=3600)] = Field(
        60.0, description="The server drops our session after this long without contact."
    )
    watchdog_s: Annotated[float, Field(ge=0.2, le=60)] = Field(
        5.0,
        description="The session is probed this often and a probe unanswered for this long means the link"
        " is dead; a busy server may stall for seconds, so keep it above its worst response time.",
    )
    reconnect_max_s: Annotated[float, Field(ge=1, le=600)] = Field(30.0, description="Backoff cap.")
    publishing_interval_s: Seconds = Field(1.0, description="Default publishing interval of subscribe tags.")
    poll_interval_s: Seconds = Field(1.0, description="Default interval of poll tags.")
    timestamp: TimestampSource = Field(
        "source", description="Which time a sample carries: source (device), server, or gateway (receipt)."
    )
    max_nodes_per_read: Annotated[int, Field(ge=0)] = Field(
        0, description="Cap per Read request; 0 = the server's OperationLimits (or 1000 if it has none)."
    )
    max_items_per_call: Annotated[int, Field(ge=0)] = Field(
        0, description="Cap per CreateMonitoredItems; 0 = the server's OperationLimits (or 1000)."
    )
    client_queue_size: Annotated[int, Field(ge=1000, le=10_000_000)] = Field(
        50_000, description="Notifications held in the gateway between the network and the pipeline."
    )
    tags: list[OpcUaTag] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_tags(self) -> OpcUaDevice:
        seen: set[str] = set()
        for tag in self.tags:
            if tag.name in seen:
                raise ValueError(f"tag name {tag.name!r} is used twice on this device")
            seen.add(tag.name)
        burst = sum(t.queue_size for t in self.tags if t.mode == "subscribe")
        if burst > self.client_queue_size:
            raise ValueError(
                f"client_queue_size {self.client_queue_size} is smaller than one publish burst ({burst}: the"
                " sum of the subscribed tags' queue_size); raise it so no notification is dropped"
            )
        return self
