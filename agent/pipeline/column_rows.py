"""Rows kept as columns until they are packed: how the window rows of a block layout leave the pipeline.

Why: a window close of 10,000 Modbus registers makes 10,000 window rows at once, and the batcher packs them
into one batch. As lists, those rows are about 2.4 MB of small objects on top of their values, all alive
until the batch is stored; the memory they take at that moment stays with the process. Kept as the
columns the pipeline computed them in (one list per statistic, one :class:`Repeated` per value that is the
same for every tag of the layout), they cost a pointer per value, and the batcher makes each wire row from
the columns only when it packs it (:meth:`ColumnRows.columns`, all C-level).

A :class:`ColumnRows` reads like the list of rows it stands for: ``len``, indexing and iteration give the
rows as lists, and slicing gives another ``ColumnRows``, so code written for lists of rows (bounds, splits
into batches, tests) works unchanged.
"""

from __future__ import annotations

__all__ = ["ColumnRows", "Repeated"]

from collections.abc import Iterator, Sequence
from itertools import repeat
from typing import Any, overload


class Repeated(Sequence[Any]):
    """A column holding one value ``count`` times, without a list of it."""

    __slots__ = ("times", "value")

    def __init__(self, value: Any, count: int) -> None:
        self.value = value
        self.times = count

    def __len__(self) -> int:
        return self.times

    @overload
    def __getitem__(self, i: int) -> Any: ...
    @overload
    def __getitem__(self, i: slice) -> Repeated: ...
    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return Repeated(self.value, len(range(self.times)[i]))
        range(self.times)[i]  # raises IndexError as a list would
        return self.value

    def __iter__(self) -> Iterator[Any]:
        return repeat(self.value, self.times)

    def __repr__(self) -> str:
        return f"Repeated({self.value!r}, {self.times})"


class ColumnRows(Sequence[list[Any]]):
    """Rows stored as equally long columns (``columns[j][i]`` is field ``j`` of row ``i``)."""

    __slots__ = ("columns",)

    def __init__(self, columns: Sequence[Sequence[Any]]) -> None:
        lengths = {len(c) for c in columns}
        if len(lengths) > 1:
            raise ValueError(f"columns of different lengths: {sorted(lengths)}")
        self.columns = tuple(columns)

    def __len__(self) -> int:
        return len(self.columns[0]) if self.columns else 0

    @overload
    def __getitem__(self, i: int) -> list[Any]: ...
    @overload
    def __getitem__(self, i: slice) -> ColumnRows: ...
    def __getitem__(self, i: int | slice) -> list[Any] | ColumnRows:
        if isinstance(i, slice):
            return ColumnRows([c[i] for c in self.columns])
        return [c[i] for c in self.columns]

    def __iter__(self) -> Iterator[list[Any]]:
        return map(list, zip(*self.columns, strict=True))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ColumnRows | list | tuple):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ColumnRows({list(self)!r})"
