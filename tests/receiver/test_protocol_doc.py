"""docs/protocol.md stays true to the code: the worked example and the field and column lists are checked."""

from __future__ import annotations

import msgpack
import pytest

from agent.core.sample import Quality
from agent.protocol import tables, wire
from agent.protocol.signing import TrustStore, parse_public_key
from tests.receiver.protocol_example import DOC, documented_block, example_batch, example_signer, render


def _table_first_column(marker: str) -> list[str]:
    """The first column of the markdown table following ``<!-- marker -->``, backticks removed."""
    lines = DOC.read_text().split(f"<!-- {marker}", 1)[1].splitlines()[1:]
    rows = []
    for line in lines:
        if not line.startswith("|"):
            if rows:
                break
            continue
        rows.append(line.split("|")[1].strip().strip("`"))
    return rows[2:]  # header and separator


def test_worked_example_is_what_the_code_produces() -> None:
    """The generated example block in the document equals a fresh rendering from the code."""
    assert documented_block(DOC.read_text()) == render(), "run: python3 -m tests.receiver.protocol_example"


def test_worked_example_verifies_with_the_documented_key() -> None:
    """The example frame verifies against the public key line printed in the document."""
    trust = TrustStore()
    trust.add(parse_public_key(example_signer().public_text)[1])
    batch = wire.verify_frame(example_batch().frame, trust)

    assert example_signer().public_text in DOC.read_text()
    assert batch.hash.hex() in DOC.read_text()


def test_documented_header_fields_are_the_signed_keys() -> None:
    """The header table lists exactly the keys of the signed map, in the order the gateway writes them."""
    keys = list(msgpack.unpackb(example_batch().signed, raw=False))

    assert _table_first_column("header-fields") == keys


@pytest.mark.parametrize("table", list(tables.TABLES))
def test_documented_columns_are_the_codes(table: str) -> None:
    """Each documented table lists the columns of agent.protocol.tables, which the gateway writes, in order."""
    assert _table_first_column(f"{table}-columns") == tables.TABLES[table]


def test_every_documented_table_is_defined() -> None:
    """Every column table marked in the document is a table of agent.protocol.tables."""
    marked = {line.split("<!-- ", 1)[1].split("-columns", 1)[0] for line in DOC.read_text().splitlines()
              if line.startswith("<!-- ") and "-columns" in line}

    assert marked == set(tables.TABLES)


def test_documented_quality_codes_match() -> None:
    """The quality codes in the raw table are the Quality enum's values."""
    expected = ", ".join(f"`{q.value}` {q.name.lower()}" for q in Quality)

    assert expected in DOC.read_text()
