"""The MQTT connection both ends make: broker URLs, password files, TLS contexts, and the aiomqtt client.

The uplink, the remote configuration channel, the receiver and the operator's push tool all connect to the same
kind of broker the same way, so the way is written once, here:

* :func:`parse_broker_url` turns ``mqtt://HOST[:PORT]`` / ``mqtts://HOST[:PORT]`` into a :class:`BrokerAddress`.
* :func:`read_password` reads a password file: its first line, without the line end. An unreadable or empty
  file is an :class:`~agent.core.errors.AgentError` naming the file, never a silently empty password; the
  password itself is never logged or put into a message.
* :func:`tls_context` builds the one kind of TLS context used: the given CA file (or the system's CAs),
  optionally a client certificate and key, certificate and host name verification on.
* :func:`create_client` builds an ``aiomqtt.Client`` from :class:`BrokerSettings`, reading the password file
  and the TLS files in a worker thread at every call, so a rotated certificate or password is picked up at the
  next connect.
* :func:`drop_client` and :func:`ack_message` are the only code that reaches into aiomqtt's and paho's
  private attributes (aiomqtt 2.x, pinned ``<3``, has no public way to abort a client or to acknowledge a
  message by hand). When aiomqtt changes, this file is the one to read.

The settings are a small frozen dataclass of this module's own, not the gateway's ``config.schema.MqttConfig``:
the protocol package stands on ``agent.core`` only, so the backend (whose settings come from command-line
options) uses it without the gateway's configuration. The gateway adapts its ``[mqtt]`` table in
``agent.uplink.broker_settings``. Rejected: each caller building its own ``aiomqtt.Client``; that is how four
TLS-context builders and three password-file readers with different behaviours came about.

aiomqtt is imported when a client is made, not with this module, so a command that only parses a broker URL or
reads a receiver database does not load the MQTT stack.
"""

from __future__ import annotations

__all__ = [
    "BrokerAddress",
    "BrokerSettings",
    "LastWill",
    "TlsFiles",
    "ack_message",
    "create_client",
    "drop_client",
    "parse_broker_url",
    "read_password",
    "tls_context",
]

import asyncio
import contextlib
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from agent.core.errors import AgentError

if TYPE_CHECKING:
    import aiomqtt


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where a broker listens, and whether it speaks TLS there (``mqtts://``)."""

    host: str
    port: int
    tls: bool


def parse_broker_url(url: str) -> BrokerAddress:
    """``mqtt://host[:port]`` (default 1883) or ``mqtts://host[:port]`` (TLS, default 8883)."""
    hint = "expected mqtt://HOST:PORT or mqtts://HOST:PORT, e.g. mqtts://broker.example:8883"
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise AgentError(f"broker URL {url!r}: {exc}", key="--broker", hint=hint) from exc
    if parts.scheme not in ("mqtt", "mqtts"):
        scheme = parts.scheme or "missing"
        raise AgentError(f"broker URL {url!r}: scheme must be mqtt or mqtts, not {scheme!r}",
                         key="--broker", hint=hint)
    if not parts.hostname:
        raise AgentError(f"broker URL {url!r} has no host name", key="--broker", hint=hint)
    if parts.username is not None or parts.password is not None:
        raise AgentError(f"broker URL {url!r} contains credentials", key="--broker",
                         hint="use --username and --password-file (a URL lands in shell history)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise AgentError(f"broker URL {url!r} has a path or query; topics are set with --prefix",
                         key="--broker", hint=hint)
    tls = parts.scheme == "mqtts"
    return BrokerAddress(parts.hostname, port or (8883 if tls else 1883), tls)


def read_password(path: Path | str) -> str:
    """The first line of the password file at ``path``, without its line end (LF or CRLF); nothing else is
    stripped, so a password may begin or end with spaces. Blocking file I/O.

    Raises AgentError naming the file when it cannot be read, is not UTF-8 text, or its first line is empty
    (a file created but never filled is a provisioning mistake, not a password). The password never appears in
    an error or a log line.
    """
    hint = "the file's first line is the MQTT password; check the path, its permissions and its content"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise AgentError(f"cannot read the password file: {exc.strerror or type(exc).__name__}",
                         path=str(path), hint=hint) from exc
    except UnicodeDecodeError as exc:
        raise AgentError("the password file is not UTF-8 text", path=str(path), hint=hint) from exc
    lines = text.splitlines()
    if not lines or not lines[0]:
        raise AgentError("the password file's first line is empty", path=str(path), hint=hint)
    return lines[0]


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The files of a TLS connection. ``ca`` None means the system's CA store; ``cert`` (with ``key``, or with
    the key inside the certificate file) is the client certificate for brokers that require one."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None


def tls_context(files: TlsFiles) -> ssl.SSLContext:
    """A client TLS context that verifies the broker's certificate and host name against ``files.ca`` (only
    that CA when given, else the system's) and presents ``files.cert`` if given. Blocking file I/O.

    Raises AgentError naming the file that could not be loaded.
    """
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                             cafile=str(files.ca) if files.ca is not None else None)
    except (OSError, ssl.SSLError) as exc:
        raise AgentError(f"cannot load the CA certificate: {exc}", path=str(files.ca) if files.ca else None,
                         hint="give the PEM file of the CA that signed the broker's certificate") from exc
    if files.cert is not None:
        try:
            context.load_cert_chain(str(files.cert), str(files.key) if files.key is not None else None)
        except (OSError, ssl.SSLError) as exc:
            raise AgentError(f"cannot load the client certificate: {exc}", path=str(files.cert),
                             hint="check the paths and that the key matches the certificate") from exc
    return context


@dataclass(frozen=True, slots=True)
class LastWill:
    """What the broker publishes for a client whose connection ends without a DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """How to connect to a broker. ``password`` is a password given directly, ``password_file`` one read at
    every connect; at most one of them is set. ``tls`` None means plain TCP. ``client_id`` None lets the
    library choose one (only for clean sessions). ``max_inflight`` None keeps paho's limits."""

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    password_file: Path | None = None
    tls: TlsFiles | None = None
    client_id: str | None = None
    clean_session: bool = True
    keepalive_s: int = 60
    connect_timeout_s: float = 10.0
    max_inflight: int | None = None

    @property
    def broker(self) -> str:
        """``host:port``, for log lines and messages."""
        return f"{self.host}:{self.port}"


def _secrets(settings: BrokerSettings) -> tuple[str | None, ssl.SSLContext | None]:
    password = settings.password
    if password is None and settings.password_file is not None:
        password = read_password(settings.password_file)
    context = tls_context(settings.tls) if settings.tls is not None else None
    return password, context


async def create_client(
    settings: BrokerSettings,
    *,
    will: LastWill | None = None,
    manual_ack: bool = False,
    pending_calls_threshold: int | None = None,
) -> aiomqtt.Client:
    """A new, not yet connected ``aiomqtt.Client`` for ``settings``; connect it with ``async with`` or
    ``__aenter__``. The password file and TLS files are read now, in a worker thread.

    ``manual_ack``: PUBACKs for received QoS 1 messages are sent only by :func:`ack_message` (set before the
    first connect, because a persistent session delivers queued messages right after CONNACK).
    ``pending_calls_threshold``: outstanding calls above which aiomqtt warns (default: its own, or
    ``max_inflight`` plus a margin when that is set). Raises AgentError when a file cannot be used.
    """
    import aiomqtt

    password, context = await asyncio.to_thread(_secrets, settings)
    limits: dict[str, Any] = {}  # passed on as keyword arguments of aiomqtt.Client
    threshold = pending_calls_threshold
    if settings.max_inflight is not None:
        # Never more than max_inflight publishes outstanding, so paho never needs to queue; a bound turns a
        # bug into an error instead of unbounded memory.
        limits = {"max_inflight_messages": settings.max_inflight,
                  "max_queued_outgoing_messages": settings.max_inflight + 8}
        if threshold is None:
            threshold = settings.max_inflight + 8
    client = aiomqtt.Client(
        settings.host,
        settings.port,
        username=settings.username,
        password=password,
        identifier=settings.client_id,
        clean_session=settings.clean_session,
        keepalive=settings.keepalive_s,
        will=aiomqtt.Will(will.topic, will.payload, qos=will.qos, retain=will.retain) if will else None,
        timeout=settings.connect_timeout_s,
        tls_context=context,
        **limits,
    )
    if threshold is not None:
        client.pending_calls_threshold = threshold
    if manual_ack:
        # aiomqtt 2.x has no option for manual acknowledgement; paho has.
        client._client.manual_ack_set(True)
    return client


def ack_message(client: aiomqtt.Client, message: aiomqtt.Message) -> None:
    """Send the PUBACK of ``message``, received on a client made with ``manual_ack=True``. A QoS 0 message
    has none; acknowledging a message twice is harmless."""
    if message.qos > 0:
        client._client.ack(message.mid, message.qos)


def drop_client(client: aiomqtt.Client) -> None:
    """Close the client's socket at once, without a DISCONNECT (the broker then publishes our will), and
    forget the client with everything paho still queues for it.

    aiomqtt 2.x (pinned <3) has no public "abort": its ``__aexit__`` sends DISCONNECT and waits for it, which
    hangs on a black-holed link. paho's ``_sock_close`` is what paho itself calls on keepalive expiry; it
    unregisters the socket from the event loop and stops aiomqtt's housekeeping task.
    """
    paho = client._client
    with contextlib.suppress(Exception):
        paho._sock_close()
    disconnected = client._disconnected
    if disconnected.done():
        if not disconnected.cancelled():
            disconnected.exception()  # mark retrieved: no "exception never retrieved" noise
    else:
        disconnected.set_result(None)
    connected = client._connected
    if connected.done() and not connected.cancelled():
        connected.exception()
