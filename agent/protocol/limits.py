"""The bounds every decoder of this protocol enforces before it uses or allocates anything it was sent.

docs/protocol.md §3.3 is the normative text; these are its values, one place for both ends: the gateway never
produces a frame beyond them, the receiver refuses a frame beyond them (before checking its signature, since
a bound is about cost, not about who signed), and the ack and push codecs use the same names.

Why fixed protocol constants rather than settings: a receiver that accepts more than a gateway may send
gains nothing, and one that accepts less refuses genuine batches for ever (they are never acknowledged, so
they are sent again and again). A bound is therefore part of the format, like a column name. Rejected:
per-deployment limits in the receiver's configuration, which turn a tuning choice into silent data loss.

Each value below carries its reason.
"""

from __future__ import annotations

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_BODY_CELLS",
    "MAX_COLUMNS",
    "MAX_FRAME_BYTES",
    "MAX_HEADER_CONTAINERS",
    "MAX_HEADER_KEYS",
    "MAX_ID_CHARS",
    "MAX_REASON_CHARS",
    "MAX_ROWS_PER_BATCH",
    "MAX_SEQ",
    "MAX_STRING_BYTES",
    "MAX_STRING_CHARS",
    "MAX_TABLES",
    "MAX_TAG_CHARS",
    "MAX_TIME_MS",
    "MAX_ZSTD_WINDOW_BYTES",
    "MIN_TIME_MS",
]

MAX_FRAME_BYTES = 16 * 1024 * 1024
"""A whole frame as published. A full batch of the largest allowed size compresses to a few MiB; the usual
MQTT broker message limit is of this order, so nothing bigger could travel anyway."""

MAX_BODY_BYTES = 64 * 1024 * 1024
"""A body after decompression, whatever the compressed stream declares about its own size: decompression
stops at this many bytes. 200,000 window rows pack to about 30 MiB, so twice that is never reached honestly."""

MAX_ROWS_PER_BATCH = 200_000
"""Rows of all tables of one batch together, counted from the msgpack array headers before any row is
unpacked. Ten times the gateway's default batch size (``pipeline.batch_max_rows``, which may not exceed it);
a bomb of millions of tiny rows is refused before it costs memory or time."""

MAX_COLUMNS = 64
"""Columns of one table (``win``, the widest, has 20)."""

MAX_TABLES = 16
"""Tables in one body (a batch holds at most three today)."""

MAX_BODY_CELLS = 5_000_000
"""Array elements and map entries in a body's tables, nested ones included (a cell may be a list, e.g. a
``gap`` row's tag names; each row counts once more as an element of its table's rows). It bounds the decoded
objects, so the memory one body costs, to about 300 MiB even for the most wasteful content: a full batch
of 200,000 window rows is 4,200,000."""

MAX_STRING_CHARS = 4096
"""Characters of any string value in a body (a text tag's value, a reason). The gateway truncates longer
values before they are batched."""

MAX_STRING_BYTES = 4 * MAX_STRING_CHARS
"""The same bound as the decoder applies it, before decoding: UTF-8 bytes of a ``str`` (at most four bytes
per character), so it is checked on the msgpack length prefix without looking at the characters."""

MAX_ID_CHARS = 128
"""Characters of an identifier: gateway id, key id, kind, ``enc``, ``alg``, table and column names, tag names.
Configuration allows far shorter gateway and device names; logs and database keys stay small."""

MAX_SEQ = 2**63 - 1
"""The largest sequence number: it fits a signed 64-bit column in any database (the ack codec shares it)."""

MIN_TIME_MS = 0
MAX_TIME_MS = 2**53
"""Timestamps are Unix ms in [0, 2**53]: exact in a float64, so JSON and JavaScript backends read them
unchanged; 2**53 ms is about 285,000 years."""

MAX_REASON_CHARS = 200
"""A refusal reason as stored or logged is truncated to this. Reasons are made by the decoder from fixed text
and never embed the body, the frame or a value of it."""

MAX_ZSTD_WINDOW_BYTES = 8 * 1024 * 1024
"""The largest Zstandard window a ``zstd`` body may need (the size RFC 8878 recommends every decoder support).
The decoder's memory is the window plus the body, so a frame cannot ask for a 2 GiB window."""

MAX_HEADER_KEYS = 32
"""Keys of the signed header map (a header has 13 today; room for keys added compatibly)."""

MAX_HEADER_CONTAINERS = 16
"""Arrays and maps in one signed header, the header map included. Bounding each array's length alone let a
16 MiB header nest 14 million empty arrays under an unknown key (ignored once decoded, but built first: over a
gigabyte and seconds of CPU per frame, before any signature check). No header value is structured today."""

MAX_TAG_CHARS = 2 * MAX_ID_CHARS + 1
"""Characters of a full tag name ``<device>.<tag>``: two identifiers and the dot (configuration allows 64 + 1 +
64 today, so a bound of one identifier would refuse genuine names)."""
