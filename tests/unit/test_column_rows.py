"""ColumnRows reads like the list of rows it stands for, and the batcher packs it to the same bytes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.batcher import Batcher
from agent.pipeline.column_rows import ColumnRows, Repeated
from agent.pipeline.pipeline import PipelineOutput
from agent.protocol.signing import generate_key
from agent.protocol.wire import frame_tags, open_frame
from buffer import AsyncDiskQueue

T0 = 1_700_000_000_000


def _window_rows(tags: list[str], start: int) -> list[list[Any]]:
    """Window rows as the per-sample path makes them (one list per tag)."""
    return [
        [tag, start, 10_000, 10, 10, 0, i, i + 9, i + 4.5, i + 9, 0, 10, i + 4.6, 2.87, i, start + 1, start + 9001,
         start + 1, start + 9001]
        for i, tag in enumerate(tags)
    ]


def _as_columns(rows: list[list[Any]]) -> ColumnRows:
    """The same rows as columns, with the fields every row shares as Repeated, as the pipeline makes them."""
    columns: list[Any] = [list(c) for c in zip(*rows, strict=True)]
    for j, column in enumerate(columns):
        if len(set(map(repr, column))) == 1:
            columns[j] = Repeated(column[0], len(column))
    return ColumnRows(columns)


def test_column_rows_read_like_their_rows() -> None:
    rows = _window_rows([f"d.t{i}" for i in range(7)], T0)
    cols = _as_columns(rows)

    assert isinstance(cols.columns[1], Repeated)  # the start is shared, not a list
    assert len(cols) == 7
    assert list(cols) == rows
    assert cols[3] == rows[3]
    assert cols[-1] == rows[-1]
    assert cols == rows
    for part in (slice(2, 5), slice(5, None), slice(None, None, -2), slice(7, None)):
        assert isinstance(cols[part], ColumnRows)
        assert cols[part] == rows[part]
    assert not cols[7:]
    with pytest.raises(IndexError):
        cols[7]


def test_repeated_is_a_sequence_of_one_value() -> None:
    col = Repeated(5, 4)
    assert list(col) == [5, 5, 5, 5]
    assert list(col[1:3]) == [5, 5]
    assert col[-1] == 5
    with pytest.raises(IndexError):
        col[4]


def test_columns_of_unequal_length_are_refused() -> None:
    with pytest.raises(ValueError, match="different lengths"):
        ColumnRows([["a", "b"], Repeated(1, 3)])


async def _bodies(path: Path, outputs: list[PipelineOutput], max_rows: int) -> list[bytes]:
    """The bodies of the batches the batcher stores for ``outputs``."""
    queue = AsyncDiskQueue(path, max_bytes=1 << 30, frame_tags=frame_tags, sync="normal", min_free_bytes=0)
    await queue.open()
    try:
        batcher = Batcher("gw1", generate_key(path.parent / path.stem), queue, max_rows=max_rows)
        await batcher.open()
        for output in outputs:
            await batcher.submit(output)
        stored = await queue.peek(100)
    finally:
        await queue.close()
    return [open_frame(b.frame).body for b in stored]


@pytest.mark.parametrize("max_rows", [20_000, 250, 7])
async def test_batches_of_column_rows_are_byte_identical_to_list_rows(tmp_path: Path, max_rows: int) -> None:
    """Window rows submitted as ColumnRows (two layouts, one of them split by max_rows) make batches with
    exactly the bodies of the same rows submitted as lists, including the tag dictionary and time offsets."""
    layout_a = _window_rows([f"plc.r{i}" for i in range(300)], T0)
    layout_b = _window_rows([f"plc.s{i}" for i in range(40)], T0)
    other = _window_rows(["calc.sum"], T0)
    raw = [["plc.r1", T0 + 5, 7, 0, None]]
    as_lists = [PipelineOutput(win=other + layout_a + layout_b, raw=raw)]
    as_columns = [PipelineOutput(win=other, win_blocks=[_as_columns(layout_a), _as_columns(layout_b)], raw=raw)]

    expected = await _bodies(tmp_path / "lists.sqlite", as_lists, max_rows)
    got = await _bodies(tmp_path / "columns.sqlite", as_columns, max_rows)

    assert len(expected) == (1 if max_rows == 20_000 else -(-342 // max_rows))
    assert got == expected
