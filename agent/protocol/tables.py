"""The tables of a batch body (format version 2): every table's name and its columns, in the order written.

docs/protocol.md §3.2 is the normative text; this is its code, and the test suite checks each column list
below against the document's table of that name. The gateway's producers (pipeline, alarm engine, batcher)
write rows in these orders and the receiver reads them by these names, so a column is added in one place.

A body is ``{"tags": [str...], "tables": {name: {"cols": [str...], "rows": [[...]...]}}}``. Two rules hold
for every table: a column named ``tag`` (:data:`TAG_COLUMN`) holds an index into the body's tag dictionary,
and columns named ``ts`` or ``start`` (:data:`OFFSET_COLUMNS`) hold milliseconds relative to the header's
``t0``; every other time column (``from_ms``, ``to_ms``, ``*_ms``) is absolute Unix ms.

Tables defined in version 2:

``win``   (:data:`WIN_COLUMNS`) window aggregates, one row per tag per window. The first ten columns are the
          original ones, unchanged in name and meaning; ``uncertain`` to ``max_ms`` were appended, and
          ``quality`` (version 2: 0 good, 1 uncertain, 2 bad; the row's value is ``mean``).
``raw``   (:data:`RAW_COLUMNS`) samples as read: ``quality`` is 0 good, 1 uncertain, 2 bad.
``alarm`` (:data:`ALARM_COLUMNS`) alarm state changes, in batches of kind ``alarm``.
``gap``   (:data:`GAP_COLUMNS`) declared loss, in batches of kind ``gap``; its ``tags`` column
          (:data:`TAG_NAMES_COLUMN`) holds full tag names, not dictionary indexes, at most 4096 of them;
          ``tags_omitted`` (appended) counts the names left out.
``outage`` (:data:`OUTAGE_COLUMNS`, version 2) declared time without collection (e.g. after an unclean stop),
          in batches of kind ``gap``; ``tags`` and ``tags_omitted`` as in ``gap``.
``catalog`` (:data:`CATALOG_COLUMNS`, version 2) the tag catalogue, in batches of kind ``catalog``: each
          tag's unit, type, description, scaling, plausible range and location.

Compatibility: columns are only ever appended, and receivers locate them by name and ignore tables and
columns they do not know (docs/protocol.md §11). Changing a name or an order here changes the wire format.

Why one module: a producer and a consumer of a table agree on its columns by importing the same list, and
the document is checked against one place. Rejected: each producer keeping the list it writes (the pipeline
its window columns, the batcher its gap columns), which makes a consumer import a producer to learn the
format and leaves the lists of one protocol in as many modules as it has tables. This module imports
nothing of the agent, so a second implementation of either end can take it alone.
"""

from __future__ import annotations

__all__ = [
    "ABSOLUTE_TIME_COLUMNS",
    "ALARM_COLUMNS",
    "ALARM_TABLE",
    "CATALOG_COLUMNS",
    "CATALOG_TABLE",
    "GAP_COLUMNS",
    "GAP_TABLE",
    "KINDS",
    "OFFSET_COLUMNS",
    "OUTAGE_COLUMNS",
    "OUTAGE_TABLE",
    "RAW_COLUMNS",
    "RAW_TABLE",
    "ROW_TIME_COLUMNS",
    "TABLES",
    "TAG_COLUMN",
    "TAG_NAMES_COLUMN",
    "WIN_COLUMNS",
    "WIN_TABLE",
]

from collections.abc import Mapping

TAG_COLUMN = "tag"
"""A column of this name holds an index into the body's ``tags`` list (a decoder resolves it to the name)."""
TAG_NAMES_COLUMN = "tags"
"""A column of this name holds a list of full tag names (``gap``: whose rows were lost)."""
OFFSET_COLUMNS = frozenset({"ts", "start"})
"""Columns holding milliseconds relative to the header's ``t0``."""
ROW_TIME_COLUMNS = ("ts", "start", "from_ms")
"""The column that places a row in time, the first one a table has: ``ts`` (raw, alarm), ``start`` (win),
``from_ms`` (gap)."""

WIN_TABLE = "win"
WIN_COLUMNS = [
    "tag", "start", "dur_ms", "count", "good", "bad", "min", "max", "mean", "last",
    "uncertain", "n", "twa", "std", "first", "first_ms", "last_ms", "min_ms", "max_ms", "quality",
]
RAW_TABLE = "raw"
RAW_COLUMNS = ["tag", "ts", "value", "quality", "reason"]
ALARM_TABLE = "alarm"
ALARM_COLUMNS = ["tag", "ts", "alarm", "state", "value", "limit", "detected_ms"]
GAP_TABLE = "gap"
GAP_COLUMNS = ["first_seq", "last_seq", "batches", "records", "from_ms", "to_ms", "reason", "tags", "tags_omitted"]
OUTAGE_TABLE = "outage"
OUTAGE_COLUMNS = ["from_ms", "to_ms", "reason", "tags", "tags_omitted"]
CATALOG_TABLE = "catalog"
CATALOG_COLUMNS = ["tag", "unit", "type", "description", "scale", "offset", "low", "high", "location"]
KINDS = ("data", "alarm", "gap", "catalog")
"""Batch kinds (protocol v2): the topic's last level and the signed header's ``kind`` are one of these and equal."""

TABLES: Mapping[str, list[str]] = {
    WIN_TABLE: WIN_COLUMNS,
    RAW_TABLE: RAW_COLUMNS,
    ALARM_TABLE: ALARM_COLUMNS,
    GAP_TABLE: GAP_COLUMNS,
    OUTAGE_TABLE: OUTAGE_COLUMNS,
    CATALOG_TABLE: CATALOG_COLUMNS,
}
"""Every table of version 2, by name, with its columns."""

ABSOLUTE_TIME_COLUMNS: Mapping[str, Mapping[str, bool]] = {
    WIN_TABLE: {"first_ms": True, "last_ms": True, "min_ms": True, "max_ms": True},
    ALARM_TABLE: {"detected_ms": False},
    GAP_TABLE: {"from_ms": False, "to_ms": False},
    OUTAGE_TABLE: {"from_ms": False, "to_ms": False},
}
"""The absolute time columns (Unix ms) of each table, and whether the column may be nil. ``dur_ms`` is a
length, not a time; ``ts`` and ``start`` are offsets (:data:`OFFSET_COLUMNS`)."""
