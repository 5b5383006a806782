"""Which tags a stored frame carries, so a drop record can say whose readings were lost."""

from __future__ import annotations

__all__ = ["frame_tags"]

from agent.core.errors import WireFormatError
from agent.protocol import wire


def frame_tags(frame: bytes) -> set[str] | None:
    """Full tag names in ``frame``'s body (``tag`` columns, and ``tags`` lists of gap tables).

    None if the frame does not decode: the drop is still counted, only without tag names.
    """
    try:
        body = wire.decode_body(wire.open_frame(frame))
    except WireFormatError:
        return None
    names: set[str] = set()
    for table in body.tables.values():
        for col_name in ("tag", "tags"):
            if col_name not in table.cols:
                continue
            i = table.cols.index(col_name)
            for row in table.rows:
                value = row[i]
                if isinstance(value, str):
                    names.add(value)
                elif isinstance(value, list):
                    names.update(v for v in value if isinstance(v, str))
    return names
