"""The tag catalogue at the archive: each version a gateway signs is kept, and rows say their tag's unit from
the version their batch refers to."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.protocol import wire
from agent.protocol.signing import BatchSigner
from agent.protocol.tables import CATALOG_COLUMNS
from backend.receiver import ReceiverStore
from tests.receiver.chain import Chain, register


@pytest.fixture
def signer() -> BatchSigner:
    return BatchSigner(Ed25519PrivateKey.generate())


@pytest.fixture
def store(tmp_path: Path, signer: BatchSigner) -> Iterator[ReceiverStore]:
    s = ReceiverStore(tmp_path / "r.sqlite")
    register(s, signer)
    yield s
    s.close()


def test_each_catalogue_version_is_kept(store: ReceiverStore, signer: BatchSigner) -> None:
    """Two catalog batches are two versions, each by its seq; the report names the newest; catalogue rows
    are not measurements."""
    chain = Chain(signer)
    first = chain.catalog({"plc1.ch4": "%CH4", "plc1.co": "ppm"})
    second = chain.catalog({"plc1.ch4": "%LEL", "plc1.co": "ppm", "plc1.o2": "%"})
    results = store.ingest_many([(first.frame, "gw-01", "catalog"), (second.frame, "gw-01", "catalog")])

    assert [r.status for r in results] == ["stored", "stored"]
    assert store.catalog("gw-01", 1)["plc1.ch4"] == {"unit": "%CH4", "type": "float",
                                                     "description": "plc1.ch4 reading", "scale": 1.0,
                                                     "offset": 0.0, "low": 0.0, "high": 100.0,
                                                     "location": "shaft 3"}
    assert {t: e["unit"] for t, e in store.catalog("gw-01").items()} == {"plc1.ch4": "%LEL", "plc1.co": "ppm",
                                                                         "plc1.o2": "%"}
    report = store.report()["gateways"]["gw-01"]
    assert (report["catalog"], report["records"]) == ({"cat_seq": 2, "tags": 3, "batches_without_catalog": 0}, 0)


def test_catalogue_values_of_the_wrong_type_are_not_taken(store: ReceiverStore, signer: BatchSigner) -> None:
    """A number where a unit belongs, or text where a limit belongs, is kept as None, not as something else;
    a catalogue row without a tag refuses the batch."""
    rows = [[0, 42, "float", "x", "1.0", 0.0, float("inf"), True, None]]
    body = wire.encode_body(["plc1.x"], {"catalog": wire.Table(CATALOG_COLUMNS, rows)}, 1)
    batch = wire.encode_frame(signer, gw="gw-01", seq=1, prev=wire.GENESIS_HASH, created=1, t0=1, t1=1,
                              kind="catalog", enc="zstd", body=body)
    store.ingest(batch.frame, topic_gw="gw-01", topic_kind="catalog")

    entry = store.catalog("gw-01")["plc1.x"]
    assert (entry["unit"], entry["scale"], entry["low"], entry["high"]) == (None, None, None, None)
    no_tag = wire.encode_body([], {"catalog": wire.Table(["unit"], [["ppm"]])}, 1)
    bad = wire.encode_frame(signer, gw="gw-01", seq=2, prev=batch.hash, created=1, t0=1, t1=1, kind="catalog",
                            enc="zstd", body=no_tag)
    assert store.ingest(bad.frame).cause == "body"


def test_rows_of_batches_without_a_catalogue_have_no_unit(store: ReceiverStore, signer: BatchSigner) -> None:
    """A batch that refers to no catalogue (every format version 1 batch) gives its rows unit None."""
    chain = Chain(signer)
    store.ingest(chain.catalog({"plc1.ch4": "%CH4"}).frame)
    store.ingest(chain.data(rows=1).frame)

    (row,) = store.records(tag="plc1.ch4", limit=1)
    assert (row["table"], row["unit"]) == ("win", None)


def test_rows_say_the_unit_of_the_catalogue_their_batch_refers_to(store: ReceiverStore,
                                                                  signer: BatchSigner) -> None:
    """Batches referring to version 1 read %CH4, those referring to version 3 read %LEL, whatever the
    arrival order; a batch referring to a version not (yet) held is counted in the report."""
    chain = Chain(signer)
    v1 = chain.catalog({"plc1.ch4": "%CH4"})
    body = wire.encode_body(["plc1.ch4"], {"win": wire.Table(["tag", "start", "mean"], [[0, 0, 1.0]])}, 5000)

    def data(seq: int, prev: bytes, cat: int) -> wire.Batch:
        return wire.encode_frame(signer, gw="gw-01", seq=seq, prev=prev, created=6000, t0=5000 + seq, t1=5000 + seq,
                                 kind="data", enc="zstd", body=body, cat=cat)

    old = data(2, v1.hash, 1)
    chain.seq, chain.prev = 2, old.hash
    v3 = chain.catalog({"plc1.ch4": "%LEL"})
    new = data(4, v3.hash, 3)
    orphan = data(7, new.hash, 6)  # seq 6, which it names, is no catalogue the archive holds
    for b in (new, old, v3, v1, orphan):
        store.ingest(b.frame)

    units = {r["seq"]: r["unit"] for r in store.records(tag="plc1.ch4") if r["table"] == "win"}
    assert units == {2: "%CH4", 4: "%LEL", 7: None}
    assert store.report()["gateways"]["gw-01"]["catalog"]["batches_without_catalog"] == 1


def test_the_longest_tag_names_a_configuration_allows_are_catalogued(store: ReceiverStore,
                                                                      signer: BatchSigner) -> None:
    """A device and a tag of 64 characters each make a 129-character full name, which the configuration accepts:
    its catalogue row is stored (it was once refused for an identifier's 128-character bound, and a refused
    catalogue batch is never acknowledged nor evicted, so the gateway would have sent it for ever)."""
    name = f"d{'x' * 63}.t{'y' * 63}"
    result = store.ingest_many([(Chain(signer).catalog({name: "ppm"}).frame, "gw-01", "catalog")])[0]

    assert (len(name), result.status) == (129, "stored")
    assert store.catalog("gw-01")[name]["unit"] == "ppm"
