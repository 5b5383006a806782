"""The configuration schema. One TOML file describes one gateway.

This module is the single source of truth: the loader validates against it, ``mine-agent config schema``
exports it as JSON Schema for editors, and docs/config.md describes it. Driver packages own their device
models; they are joined here into one union discriminated by ``protocol``.
"""

from __future__ import annotations

__all__ = [
    "SCHEMA_ID",
    "AgentConfig",
    "AlarmRule",
    "BufferConfig",
    "CalculatedTag",
    "DeadbandRule",
    "DeviceConfig",
    "GatewayConfig",
    "HealthConfig",
    "MqttConfig",
    "PipelineConfig",
    "RemoteConfig",
    "TlsConfig",
    "json_schema",
]

import difflib
import itertools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ByteSize, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from agent.core.fields import (
    BROKER_URL_PATTERN,
    DEVICE_GLOB_PATTERN,
    FULL_TAG_PATTERN,
    LISTEN_PATTERN,
    NAME_PATTERN,
    PATTERN_HELP,
    TOPIC_LEVEL_PATTERN,
    ConfigValueError,
    Name,
    Port,
    Seconds,
    StrictModel,
    TagCatalogFields,
)
from agent.protocol.limits import MAX_FRAME_BYTES, MAX_ROWS_PER_BATCH, MAX_STRING_CHARS
from drivers.modbus.config import ModbusRtuDevice, ModbusRtuTcpDevice, ModbusTcpDevice
from drivers.opcua.config import OpcUaDevice
from drivers.serial.config import SerialDevice

DeviceConfig = Annotated[
    ModbusTcpDevice | ModbusRtuDevice | ModbusRtuTcpDevice | OpcUaDevice | SerialDevice,
    Field(discriminator="protocol"),
]

SCHEMA_ID = "urn:mine-edge-agent:config:1"

# pydantic's ByteSize parser accepts trailing text ("2 GB of disk" is 2 GB); a size must be all size.
_MIN_BUFFER_BYTES = 1 << 20
# Written without flags so the same expression serves in the JSON Schema (ECMA-262 regex) for editors.
SIZE_PATTERN = r"^\s*\d+(\.\d+)?\s*([KkMmGgTtPp][Ii]?[Bb]|[KkMmGgTtPp]|[Bb])?\s*$"
_SIZE_TEXT = re.compile(SIZE_PATTERN)


def _size_schema(schema: dict[str, Any]) -> None:
    """Give editors the same size syntax the loader accepts, and the minimum."""
    for alternative in schema.get("anyOf", []):
        if alternative.get("type") == "string":
            alternative["pattern"] = SIZE_PATTERN
        elif alternative.get("type") == "integer":
            alternative["minimum"] = _MIN_BUFFER_BYTES


class GatewayConfig(StrictModel):
    """[gateway]: who this gateway is and where it keeps its state."""

    id: Name = Field(
        description="This gateway's id: part of every MQTT topic and every signed batch. Letters, digits, "
        "'_' and '-', starting with a letter; at most 64 characters."
    )
    key_file: Path = Field(
        description="Ed25519 private key (PEM) made by 'mine-agent keys init'; signs every batch. "
        "Keep it readable by the agent only (mode 0600)."
    )
    state_dir: Path = Field(
        Path("/var/lib/mine-agent"),
        description="Directory of the buffer and other state; must survive reboots.",
    )


class TlsConfig(StrictModel):
    """[mqtt.tls]: present means the broker connection uses TLS."""

    model_config = ConfigDict(
        json_schema_extra={"dependentRequired": {"cert_file": ["key_file"], "key_file": ["cert_file"]}}
    )

    ca_file: Path | None = Field(
        None, description="CA bundle (PEM) that signed the broker's certificate; default: the system's CAs."
    )
    cert_file: Path | None = Field(
        None, description="Client certificate (PEM), for brokers that require one; goes with key_file."
    )
    key_file: Path | None = Field(
        None, description="Private key (PEM) of the client certificate; never logged."
    )

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            missing = "key_file" if self.key_file is None else "cert_file"
            raise ConfigValueError(
                f"cert_file and key_file go together: {missing} is missing",
                key=(missing,),
                allowed="both or neither",
            )
        return self


class MqttConfig(StrictModel):
    """[mqtt]: the broker that receives the signed batches."""

    model_config = ConfigDict(json_schema_extra={
        "not": {"required": ["password", "password_file"]},
        # ack_mode absent means "backend", which needs the archive's keys.
        "if": {"properties": {"ack_mode": {"const": "backend"}}},
        "then": {"required": ["archive_keys_file"]},
    })

    host: str = Field(min_length=1, description="Broker host name or IP address.")
    port: Port = Field(1883, description="Broker TCP port, 1-65535 (usually 1883, or 8883 with TLS).")
    tls: TlsConfig | None = Field(None, description="Present means TLS is used; see [mqtt.tls].")
    username: str | None = Field(None, description="User name, if the broker requires one.")
    password: SecretStr | None = Field(
        None, description="Password in clear text in this file; prefer password_file. Never logged or shown."
    )
    password_file: Path | None = Field(
        None, description="File whose first line is the password (mode 0600); read at connect time."
    )
    client_id: str | None = Field(
        None, min_length=1, max_length=128, description="MQTT client id; default 'mine-agent-<gateway id>'."
    )
    topic_prefix: str = Field(
        "mine",
        pattern=TOPIC_LEVEL_PATTERN,
        description="First topic level: topics are <prefix>/<gateway id>/... No spaces, '#' or '+'.",
    )
    keepalive_s: Annotated[int, Field(ge=5, le=600)] = Field(
        15, description="MQTT keepalive in whole seconds, 5-600: how soon a dead link is noticed."
    )
    publish_timeout_s: Seconds = Field(
        10.0, description="A batch without PUBACK within this many seconds means the link is dead: reconnect."
    )
    max_inflight: Annotated[int, Field(ge=1, le=1000)] = Field(
        20, description="Batches published and not yet acknowledged at the same time, 1-1000."
    )
    connect_timeout_s: Seconds = Field(
        10.0, description="TCP/TLS connect plus CONNACK must finish within this."
    )
    reconnect_max_s: Seconds = Field(30.0, description="Cap of the reconnect backoff (starts at 0.5 s).")
    backlog_share: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        0.5,
        description="Share of publish slots given to the backlog (oldest first) while newer data also waits; "
        "the rest goes to the newest data. Alarms and gap batches always go first.",
    )
    ack_mode: Literal["broker", "backend"] = Field(
        "backend",
        description="backend (the default): a batch is deleted only when the archive acknowledges it in an ack "
        "signed by a key of archive_keys_file, so nothing is lost when the broker loses messages; broker: a "
        "batch is deleted on the broker's PUBACK, and is lost for good if the broker then loses it (a restart "
        "without persistence, a crash between its saves).",
    )
    archive_keys_file: Path | None = Field(
        None,
        description="backend mode (required there): the archive's public keys, one 'ed25519:<base64>' line each "
        "('#' comments), as printed by 'mine-backend keys archive-public'. Only acks signed by one of them "
        "delete batches. Read at start and on every reload.",
    )
    ack_timeout_s: Seconds = Field(
        60.0, description="backend mode: a published batch not acknowledged within this is sent again."
    )
    max_unacked: Annotated[int, Field(ge=1, le=20000)] = Field(
        2000, description="backend mode: at most this many published batches wait for the backend's ack."
    )

    @model_validator(mode="after")
    def _one_password(self) -> MqttConfig:
        if self.password is not None and self.password_file is not None:
            raise ConfigValueError(
                "password and password_file both set", key=("password_file",), allowed="one of them"
            )
        if (self.password is not None or self.password_file is not None) and self.username is None:
            raise ConfigValueError(
                "a password needs a username", key=("username",), allowed="set mqtt.username too"
            )
        if self.ack_mode == "backend" and self.archive_keys_file is None:
            raise ConfigValueError(
                "required with ack_mode = \"backend\" (the default): batches are deleted only on acks signed "
                "by the archive, and this file names its keys",
                key=("archive_keys_file",),
                allowed="a file with the line printed by 'mine-backend keys archive-public' on the backend; or "
                "ack_mode = \"broker\", which deletes batches on the broker's PUBACK and loses them for good "
                "when the broker loses what it acknowledged",
            )
        return self

    def read_password(self) -> SecretStr | None:
        """The password to log in with: ``password``, or the first line of ``password_file`` read now
        (``agent.protocol.mqtt.read_password``, the one reader of password files).

        Reading happens here, at connect time, not when the configuration is validated (validation does no
        I/O). A missing, unreadable or empty file raises ConfigError naming the key.
        """
        if self.password_file is None:
            return self.password
        from agent.core.errors import AgentError, ConfigError, ConfigProblem
        from agent.protocol.mqtt import read_password

        try:
            return SecretStr(read_password(self.password_file))
        except AgentError as exc:
            problem = ConfigProblem(str(self.password_file), None, "mqtt.password_file", exc.message)
            raise ConfigError([problem]) from exc


def _free_size_schema(schema: dict[str, Any]) -> None:
    """Like the cap's size schema, but 0 is allowed: a watermark of 0 turns the free-disk rule off."""
    _size_schema(schema)
    for alternative in schema.get("anyOf", []):
        if alternative.get("type") == "integer":
            alternative["minimum"] = 0


class BufferConfig(StrictModel):
    """[buffer]: the durable store-and-forward buffer on disk."""

    path: Path | None = Field(
        None, description="SQLite file of the buffer; default <state_dir>/buffer.sqlite."
    )
    max_bytes: ByteSize = Field(
        ByteSize(4 << 30),
        json_schema_extra=_size_schema,
        description="Cap of stored batches: a number of bytes or a size such as '512 MiB' or '2 GiB'. "
        "When full, the oldest data batches are evicted (then alarms) and declared in a signed gap batch; "
        "gap and catalog batches are never evicted. "
        "2,000 tags at 1 Hz in 10 s windows need about 325 MiB per day of outage "
        "(bench/buffer_sizing.py): the default 4 GiB bridges 7 days for up to about 3,500 such tags. "
        "A smaller disk is protected by min_free_bytes, which binds first; more than the file system holds is "
        "clamped at start.",
    )
    sync: Literal["full", "normal"] = Field(
        "full",
        description="full: a committed batch survives a power cut; normal: faster, may lose the last ones.",
    )
    min_free_bytes: ByteSize = Field(
        ByteSize(64 << 20),
        json_schema_extra=_free_size_schema,
        description="Free disk to leave on the buffer's file system; below it old data is dropped (counted). "
        "At most half of the file system: more is clamped at start.",
    )

    @field_validator("max_bytes", "min_free_bytes", mode="before")
    @classmethod
    def _whole_size(cls, value: object) -> object:
        if isinstance(value, str) and not _SIZE_TEXT.match(value):
            raise PydanticCustomError("byte_size", "not a size")
        return value

    @model_validator(mode="after")
    def _useful_size(self) -> BufferConfig:
        if self.max_bytes < _MIN_BUFFER_BYTES:
            raise ConfigValueError(
                "too small to hold batches",
                key=("max_bytes",),
                got=str(int(self.max_bytes)),
                allowed="at least '1 MiB' (1048576)",
            )
        return self



class PipelineConfig(StrictModel):
    """[pipeline]: window aggregates and batching."""

    window_s: Annotated[int, Field(ge=1, le=86400)] = Field(
        10,
        description="Aggregation window in whole seconds, 1-86400, dividing a day (86400 s) so windows align "
        "to wall-clock multiples (e.g. 10, 60, 300, 3600).",
    )
    batch_interval_s: Seconds = Field(1.0, description="How often collected records become a signed batch.")
    batch_max_rows: Annotated[int, Field(ge=1, le=MAX_ROWS_PER_BATCH)] = Field(
        20000, description="Most records in one batch, 1-200000 (receivers refuse more); a fuller batch is cut early."
    )
    compression: Literal["zstd", "zlib", "none"] = Field(
        "zstd", description="Compression of batch bodies: zstd (best), zlib, or none."
    )
    late_grace_s: Annotated[float, Field(ge=0, le=3600)] = Field(
        2.0, description="Seconds, 0-3600: a window is closed this long after its end, so slow polls still land in it."
    )
    statistics_quality: Literal["good", "good_and_uncertain"] = Field(
        "good",
        description="Which samples enter min/max/mean/std/twa: good only (default), or good and uncertain. "
        "Every sample is counted by quality either way.",
    )

    @model_validator(mode="after")
    def _aligned(self) -> PipelineConfig:
        if 86400 % self.window_s:
            raise ConfigValueError(
                "does not divide a day, so windows cannot align to the clock",
                key=("window_s",),
                got=str(self.window_s),
                allowed="a divisor of 86400 such as 10, 60, 300, 900, 3600",
            )
        return self


class HealthConfig(StrictModel):
    """[health]: the local endpoint for Prometheus metrics, the health document and 'mine-agent status'."""

    enabled: bool = Field(
        True, description="Serve /metrics, /health and /tail for monitoring and 'mine-agent status'."
    )
    listen: str = Field(
        "127.0.0.1:9108", pattern=LISTEN_PATTERN,
        description="HOST:PORT of the health endpoint; keep it on loopback unless a monitoring system needs it. "
        "A remote push may not move it off loopback unless the local file already listens elsewhere.",
    )

    @field_validator("listen")
    @classmethod
    def _port_in_range(cls, value: str) -> str:
        port = int(value.rpartition(":")[2])
        if not 0 <= port <= 65535:  # 0: the system picks a free port (tests and side-by-side runs)
            raise ConfigValueError("port out of range", got=str(port), allowed="0-65535")
        return value

    @property
    def host(self) -> str:
        """The host part of ``listen``, without the brackets of an IPv6 address."""
        return self.listen.rpartition(":")[0].strip("[]")


class RemoteConfig(StrictModel):
    """[remote_config]: signed configuration pushes from the mine's operator (docs/protocol.md §10).

    Absent (the default) means the gateway accepts no remote configuration at all. The trust file is the only
    way an operator key becomes trusted; a push may not point it elsewhere, nor change any setting of this
    table other than health_window_s, max_push_bytes and history, nor any file path (see agent.remote.guard).
    """

    enabled: bool = Field(True, description="Accept signed configuration pushes on <prefix>/<gateway id>/config.")
    trust_file: Path | None = Field(
        None,
        description="Operator public keys ('ed25519:<base64>' lines, '#' comments) whose pushes are accepted; "
        "default <state_dir>/operator.trust. Only a technician on site, or a push signed by a key already "
        "listed, can change it; such a push rewrites the file, so it must be where the agent may write (the "
        "state directory, under the shipped systemd unit).",
    )
    health_window_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        60.0,
        description="Seconds, at most 3600, that changed devices get to connect and read good values (and a "
        "changed uplink to reconnect) before a new configuration is rolled back.",
    )
    max_push_bytes: Annotated[int, Field(ge=1024, le=16 << 20)] = Field(
        1 << 20, description="Largest push accepted, in bytes (1024 to 16 MiB); bigger ones are refused unread."
    )
    history: Annotated[int, Field(ge=1, le=10000)] = Field(
        200, description="How many past configuration outcomes the state directory keeps, 1-10000."
    )
    max_push_age_s: Annotated[int, Field(ge=60, le=30 * 86400)] = Field(
        72 * 3600,
        description="A push expires this many seconds after it was signed (its 'issued' time), 60 to 2592000. "
        "The default, 3 days, lets a push wait on the broker through a long weekend without a link, and limits "
        "what a gateway whose state directory was lost could be made to apply again to pushes of the last 3 days.",
    )
    clock_skew_s: Annotated[int, Field(ge=0, le=86400)] = Field(
        300,
        description="Seconds, 0-86400, by which the operator's and the gateway's clocks may disagree: added to "
        "max_push_age_s, and a push issued further in the future than this is refused.",
    )
    max_version_step: Annotated[int, Field(ge=1, le=2**62)] = Field(
        86400,
        description="A push's version may exceed the larger of the highest version this gateway has tried and "
        "its clock in Unix seconds (the operator tool's default version) by at most this much; so a push with a "
        "huge version cannot lock out every later one.",
    )
    allowed_brokers: list[Annotated[str, Field(pattern=BROKER_URL_PATTERN)]] = Field(
        default_factory=list,
        max_length=64,
        description="Brokers a push may move [mqtt] to, as mqtt://HOST:PORT or mqtts://HOST:PORT (mqtts: with "
        "[mqtt.tls]). Without an entry a push may not change mqtt.host, mqtt.port or whether TLS is used: the "
        "broker receives the MQTT password.",
    )
    allowed_device_paths: list[Annotated[str, Field(pattern=DEVICE_GLOB_PATTERN)]] = Field(
        default_factory=list,
        max_length=64,
        description="Serial device paths a push may set, as absolute glob patterns matched one path level at a "
        "time (e.g. '/dev/ttyUSB*', '/dev/serial/by-id/*'). Without an entry a push may not change a serial "
        "port nor add a serial device.",
    )

    @field_validator("allowed_device_paths")
    @classmethod
    def _no_parent_levels(cls, value: list[str]) -> list[str]:
        for i, pattern in enumerate(value):
            if ".." in pattern.split("/"):
                raise ConfigValueError("'..' is not allowed in a device path pattern", key=(i,), got=pattern,
                                       allowed="an absolute pattern such as '/dev/ttyUSB*'")
        return value

FullTagName = Annotated[
    str,
    Field(
        pattern=FULL_TAG_PATTERN,
        description="A full tag name '<device>.<tag>', e.g. 'gas-station1.ch4', or 'calc.<name>' for a "
        "calculated tag.",
    ),
]
_Limit = Annotated[float, Field(description="A threshold in the tag's unit.")]
_Duration = Annotated[float, Field(ge=0, le=86400, description="Seconds, 0-86400.")]


class AlarmRule(StrictModel):
    """[[alarms]]: the alarm rules of one tag. Events are reported (batches of kind alarm), never acted on."""

    tag: FullTagName = Field(description="The tag watched: '<device>.<tag>' or 'calc.<name>'.")
    high_high: _Limit | None = Field(None, description="Raise 'high_high' at value >= this.")
    high: _Limit | None = Field(None, description="Raise 'high' at value >= this.")
    low: _Limit | None = Field(None, description="Raise 'low' at value <= this.")
    low_low: _Limit | None = Field(None, description="Raise 'low_low' at value <= this.")
    deadband: Annotated[float, Field(ge=0)] = Field(
        0.0,
        description="Hysteresis in the tag's unit: a high alarm clears below limit - deadband, a low alarm "
        "above limit + deadband.",
    )
    on_delay_s: _Duration = Field(
        0.0, description="A threshold or rate alarm is raised only after its condition held this long."
    )
    off_delay_s: _Duration = Field(
        0.0, description="A threshold or rate alarm is cleared only after its clear condition held this long."
    )
    rate_per_s: Annotated[float, Field(gt=0)] | None = Field(
        None, description="Raise 'rate' when the value changes faster than this many units per second."
    )
    stuck_s: Annotated[float, Field(gt=0, le=86400 * 7)] | None = Field(
        None,
        description="Raise 'stuck' when good values stay within stuck_band for this many seconds "
        "(a frozen or faked sensor).",
    )
    stuck_band: Annotated[float, Field(ge=0)] = Field(
        0.0, description="Width of the band for 'stuck' (max - min of the values), in the tag's unit."
    )
    bad_quality_s: Annotated[float, Field(gt=0, le=86400)] | None = Field(
        None,
        description="Raise 'bad_quality' when no good sample came for this many seconds (bad, uncertain or "
        "a silent device).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> AlarmRule:
        order = [(k, getattr(self, k)) for k in ("low_low", "low", "high", "high_high")]
        present = [(k, v) for k, v in order if v is not None]
        for (k1, v1), (k2, v2) in itertools.pairwise(present):
            if not v1 < v2:
                raise ConfigValueError(
                    f"must be more than {k1} ({v1:g})", key=(k2,), got=f"{v2:g}",
                    allowed="low_low < low < high < high_high",
                )
        if self.stuck_band and self.stuck_s is None:
            raise ConfigValueError("stuck_band needs stuck_s", key=("stuck_band",), allowed="set stuck_s too")
        if not present and self.rate_per_s is None and self.stuck_s is None and self.bad_quality_s is None:
            raise ConfigValueError(
                "no rule set", key=("tag",), got=self.tag,
                allowed="at least one of high_high, high, low, low_low, rate_per_s, stuck_s, bad_quality_s",
            )
        return self


class DeadbandRule(StrictModel):
    """[[deadbands]]: report one tag by exception: its raw samples are sent only when they change enough."""

    tag: FullTagName = Field(description="The tag: '<device>.<tag>' or 'calc.<name>'.")
    absolute: Annotated[float, Field(ge=0)] | None = Field(
        None, description="Send a sample that differs from the last sent one by more than this (tag's unit)."
    )
    percent: Annotated[float, Field(ge=0, le=1000)] | None = Field(
        None, description="Send a sample that differs from the last sent one by more than this % of it."
    )
    heartbeat_s: Annotated[float, Field(ge=0, le=86400)] = Field(
        300.0, description="Send the value anyway when nothing was sent for this long; 0 means never."
    )

    @model_validator(mode="after")
    def _some_deadband(self) -> DeadbandRule:
        if self.absolute is None and self.percent is None:
            raise ConfigValueError("no deadband set", key=("tag",), got=self.tag, allowed="absolute, percent or both")
        return self


class CalculatedTag(TagCatalogFields):
    """[[calculated]]: a tag computed from others with one fixed operation (no expressions, no code)."""

    name: Name = Field(description="The tag is named 'calc.<name>'.")
    op: Literal["sum", "difference", "mean", "min", "max", "scale", "integral"] = Field(
        description="sum, mean, min, max of the inputs; difference = first - second; scale = input * factor "
        "+ offset (unit conversion); integral = running total of input * factor * seconds."
    )
    inputs: list[FullTagName] = Field(min_length=1, description="Full names of the device tags used.")
    factor: float = Field(1.0, description="Multiplier for scale and integral (e.g. 1/3600 for m3/h to m3).")
    offset: float = Field(0.0, description="Added after the factor, for scale.")
    max_age_s: Annotated[float, Field(gt=0, le=86400)] = Field(
        60.0, description="An input older than this when the others update makes the result bad."
    )
    unit: str | None = Field(None, description="Unit of the result, for people reading the data.")
    raw: bool = Field(False, description="Also send every computed sample, not only window aggregates.")

    @model_validator(mode="after")
    def _arity(self) -> CalculatedTag:
        wanted = {"difference": 2, "scale": 1, "integral": 1}.get(self.op)
        if wanted is not None and len(self.inputs) != wanted:
            raise ConfigValueError(
                f"{self.op} takes {wanted} input{'s' if wanted > 1 else ''}", key=("inputs",),
                got=str(len(self.inputs)), allowed=str(wanted),
            )
        return self


class AgentConfig(StrictModel):
    """The configuration of one mine-agent gateway: one TOML file."""

    gateway: GatewayConfig = Field(description="Who this gateway is; see [gateway].")
    mqtt: MqttConfig = Field(description="The broker; see [mqtt].")
    buffer: BufferConfig = Field(BufferConfig(), description="The durable buffer; see [buffer].")
    pipeline: PipelineConfig = Field(
        PipelineConfig(), description="Aggregation and batching; see [pipeline]."
    )
    remote_config: RemoteConfig | None = Field(
        None, description="Signed remote configuration pushes; absent means none are accepted. See [remote_config]."
    )
    devices: dict[Name, DeviceConfig] = Field(
        default_factory=dict,
        description="The field devices, one [devices.<name>] table each; 'protocol' selects the driver.",
        # pydantic lists the name pattern under patternProperties only, which lets editors accept any other
        # name silently; say that names must match it.
        json_schema_extra={
            "additionalProperties": False,
            "propertyNames": {"pattern": NAME_PATTERN, "description": PATTERN_HELP[NAME_PATTERN]},
        },
    )
    health: HealthConfig = Field(HealthConfig(), description="The local health and metrics endpoint; see [health].")

    alarms: list[AlarmRule] = Field(
        default_factory=list, description="Alarm rules, one [[alarms]] table per tag; see [[alarms]]."
    )
    deadbands: list[DeadbandRule] = Field(
        default_factory=list, description="Report by exception, one [[deadbands]] table per tag."
    )
    calculated: list[CalculatedTag] = Field(
        default_factory=list, description="Calculated tags, one [[calculated]] table each."
    )

    @model_validator(mode="after")
    def _tag_references(self) -> AgentConfig:
        """Every tag named by [[alarms]], [[deadbands]] and [[calculated]] exists, once per section."""
        device_tags = {f"{name}.{tag.name}" for name, dev in self.devices.items() for tag in dev.tags}
        if "calc" in self.devices and self.calculated:
            raise ConfigValueError(
                "the device name 'calc' is reserved for calculated tags", key=("devices", "calc"),
                allowed="another device name",
            )
        calc_tags: set[str] = set()
        for i, calc in enumerate(self.calculated):
            full = f"calc.{calc.name}"
            if full in calc_tags:
                raise ConfigValueError("calculated tag defined twice", key=("calculated", i, "name"), got=calc.name)
            calc_tags.add(full)
            for j, tag in enumerate(calc.inputs):
                if tag not in device_tags:
                    raise _unknown_tag(("calculated", i, "inputs", j), tag, device_tags, "device tags")
        known = device_tags | calc_tags
        sections: tuple[tuple[str, Sequence[AlarmRule | DeadbandRule]], ...] = (
            ("alarms", self.alarms), ("deadbands", self.deadbands))
        for section, rules in sections:
            seen: set[str] = set()
            for i, rule in enumerate(rules):
                if rule.tag not in known:
                    raise _unknown_tag((section, i, "tag"), rule.tag, known, "configured tags")
                if rule.tag in seen:
                    raise ConfigValueError(
                        f"a second [[{section}]] table for the same tag", key=(section, i, "tag"), got=rule.tag,
                        allowed="one table per tag; put all its rules in the first",
                    )
                seen.add(rule.tag)
        return self

    @model_validator(mode="after")
    def _catalogue_fits(self) -> AgentConfig:
        """The tag catalogue is one signed batch that every later batch names by its seq (``cat``), so it cannot
        be split over batches: the configuration keeps it within the bounds a receiver enforces."""
        tags: list[tuple[str, Any]] = [(f"{d}.{t.name}", t) for d, dev in self.devices.items() for t in dev.tags]
        tags += [(f"calc.{c.name}", c) for c in self.calculated]
        if len(tags) > MAX_ROWS_PER_BATCH:
            raise ConfigValueError(
                "more tags than one tag catalogue batch can list", key=("devices",), got=f"{len(tags)} tags",
                allowed=f"at most {MAX_ROWS_PER_BATCH} tags per gateway; split them over two gateways",
            )
        size = sum(_catalogue_row_bytes(name, tag) for name, tag in tags)
        if size > CATALOGUE_MAX_BYTES:
            raise ConfigValueError(
                "the tag catalogue does not fit one batch", key=("devices",),
                got=f"about {size / (1 << 20):.1f} MiB of tag names, units, descriptions and locations",
                allowed=f"at most {CATALOGUE_MAX_BYTES >> 20} MiB: shorten descriptions and locations, or split "
                "the tags over two gateways",
            )
        return self

    @property
    def buffer_path(self) -> Path:
        return self.buffer.path or self.gateway.state_dir / "buffer.sqlite"

    @property
    def trust_path(self) -> Path | None:
        """The operator trust list of ``[remote_config]``; None without that section."""
        if self.remote_config is None:
            return None
        return self.remote_config.trust_file or self.gateway.state_dir / "operator.trust"


CATALOGUE_MAX_BYTES = MAX_FRAME_BYTES // 2
"""Packed size of the tag catalogue's body at most: a body sent uncompressed (``compression = "none"``) is
the frame, which may not exceed MAX_FRAME_BYTES, and half leaves room for the header and for the estimate."""


def _catalogue_row_bytes(name: str, tag: Any) -> int:
    """At least what one tag's catalogue row and dictionary entry pack to (agent.batcher.catalog_rows): each
    text with its msgpack header (5 bytes at most), numbers and the row's own header in 64 bytes."""
    unit = getattr(tag, "unit", None)
    texts = [name, unit[:MAX_STRING_CHARS] if unit else None, getattr(tag, "type", None), tag.description,
             tag.location]
    return 64 + sum(len(str(t).encode()) + 5 for t in texts if t is not None)


def _unknown_tag(key: tuple[str | int, ...], tag: str, known: set[str], what: str) -> ConfigValueError:
    close = difflib.get_close_matches(tag, sorted(known), n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"one of the {what} '<device>.<tag>'"
    return ConfigValueError("no such tag", key=key, got=f"'{tag}'", allowed=hint)


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the configuration file, for editors and other tools."""
    schema = AgentConfig.model_json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "mine-agent configuration",
        **{k: v for k, v in schema.items() if k != "title"},
    }
