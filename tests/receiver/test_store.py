"""ReceiverStore: every frame is stored, counted as a duplicate or rejected with a reason; the report accounts
for every sequence number."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.protocol import wire
from agent.protocol.signing import BatchSigner
from agent.protocol.tables import GAP_COLUMNS
from backend.receiver import ReceiverStore, _subtract
from tests.receiver.chain import T0, Chain, register

_NIL = object()  # a column present with the value nil


@pytest.fixture
def signer() -> BatchSigner:
    return BatchSigner(Ed25519PrivateKey.generate())


@pytest.fixture
def store(tmp_path: Path, signer: BatchSigner) -> ReceiverStore:
    s = ReceiverStore(tmp_path / "receiver.sqlite")
    register(s, signer)
    yield s
    s.close()


def _gw(store: ReceiverStore, gw: str = "gw-01") -> dict:
    return store.report()["gateways"][gw]


def test_good_chain_in_order_is_stored_completely(store: ReceiverStore,
                                                  signer: BatchSigner) -> None:
    """Three chained batches arriving in order are stored with all their records and nothing flagged."""
    chain = Chain(signer)
    results = [store.ingest(chain.data(rows=2).frame) for _ in range(3)]

    assert [r.status for r in results] == ["stored"] * 3
    report = _gw(store)
    assert [k["status"] for k in report.pop("keys")] == ["valid"]
    assert report == {"batches": 3, "records": 6, "duplicates": 0, "rejected": [], "chain_breaks": [],
                      "refusals": {"frames": 0, "deliveries": 0, "bytes": 0, "kept_bytes": 0, "not_kept_whole": 0,
                                   "by_cause": {}, "by_signer": {}},
                      "missing": [], "declared_gaps": [], "declared_outages": [], "last_seq": 3,
                      "catalog": {"cat_seq": None, "tags": 0, "batches_without_catalog": 0}}


def test_out_of_order_arrival_is_not_a_chain_break(store: ReceiverStore,
                                                   signer: BatchSigner) -> None:
    """Batches arriving 3, 1, 4, 2 (alarm overtaking data, backlog after live) verify as one intact chain."""
    chain = Chain(signer)
    frames = [chain.data().frame for _ in range(4)]
    for i in (2, 0, 3, 1):
        store.ingest(frames[i])

    report = _gw(store)
    assert (report["chain_breaks"], report["missing"], report["batches"]) == ([], [], 4)


def test_duplicate_is_counted_and_not_stored_twice(store: ReceiverStore,
                                                   signer: BatchSigner) -> None:
    """The same frame delivered twice (at-least-once) is stored once and counted as a duplicate."""
    frame = Chain(signer).data().frame
    first = store.ingest(frame)
    second = store.ingest(frame)

    assert (first.status, second.status, second.ackable) == ("stored", "duplicate", True)
    report = _gw(store)
    assert (report["batches"], report["records"], report["duplicates"]) == (1, 2, 1)


def test_duplicate_inside_one_transaction_is_detected(store: ReceiverStore,
                                                      signer: BatchSigner) -> None:
    """A redelivery in the same commit as its original is still a duplicate."""
    frame = Chain(signer).data().frame
    results = store.ingest_many([(frame, "gw-01", "data"), (frame, "gw-01", "data")])

    assert [r.status for r in results] == ["stored", "duplicate"]


def test_altered_byte_is_rejected_with_reason(store: ReceiverStore,
                                              signer: BatchSigner) -> None:
    """A frame with one altered body byte is refused as a bad signature, under its gateway and seq, with its
    signer, and is not acknowledged (the archive does not hold it)."""
    chain = Chain(signer)
    store.ingest(chain.data().frame)
    altered = bytearray(chain.data().frame)
    altered[-67] ^= 0x01  # last byte of the signed part: inside the compressed body
    result = store.ingest(bytes(altered))

    assert (result.status, result.seq, result.ackable) == ("rejected", 2, False)
    report = _gw(store)
    assert report["rejected"] == [{"seq": 2, "cause": "signature", "reason": "signature does not verify",
                                   "claimed_gw": "gw-01", "signer": signer.kid, "times": 1}]
    assert (report["batches"], report["last_seq"]) == (1, 1)


def test_genuine_copy_after_altered_one_is_stored(store: ReceiverStore,
                                                  signer: BatchSigner) -> None:
    """A rejected copy does not take the seq: the genuine frame arriving later is stored."""
    frame = Chain(signer).data().frame
    altered = bytearray(frame)
    altered[-1] ^= 0x01  # inside the signature

    assert store.ingest(bytes(altered)).status == "rejected"
    assert store.ingest(frame).status == "stored"


def test_deleted_batch_is_reported_missing(store: ReceiverStore,
                                           signer: BatchSigner) -> None:
    """Seqs never received between 1 and the highest stored seq are reported as missing ranges."""
    chain = Chain(signer)
    frames = [chain.data().frame for _ in range(7)]
    for i in (0, 3, 6):  # seqs 1, 4, 7
        store.ingest(frames[i])

    assert _gw(store)["missing"] == [[2, 3], [5, 6]]


def test_missing_start_of_chain_is_reported(store: ReceiverStore,
                                            signer: BatchSigner) -> None:
    """A receiver that only saw seq 3 reports 1..2 missing."""
    chain = Chain(signer)
    frames = [chain.data().frame for _ in range(3)]
    store.ingest(frames[2])

    assert _gw(store)["missing"] == [[1, 2]]


def test_seq_reused_with_other_content_is_rejected(store: ReceiverStore,
                                                   signer: BatchSigner) -> None:
    """A validly signed batch reusing a stored seq with other content is refused and reported."""
    store.ingest(Chain(signer).data(value=1.0).frame)
    result = store.ingest(Chain(signer).data(value=2.0).frame)

    assert (result.status, result.seq) == ("rejected", 1)
    assert result.reason is not None
    assert result.reason.startswith("seq reused with different content")
    assert _gw(store)["rejected"][0]["reason"] == result.reason


def test_unknown_key_is_rejected_naming_the_key(store: ReceiverStore) -> None:
    """A frame signed by a key missing from the registry is refused with the key id as its signer."""
    stranger = BatchSigner(Ed25519PrivateKey.generate())
    register(store, BatchSigner(Ed25519PrivateKey.generate()), "gw-02")  # gw-02 is a gateway of the archive
    result = store.ingest(Chain(stranger, gw="gw-02").data().frame)

    assert (result.status, result.cause, result.signer) == ("rejected", "unknown_key", stranger.kid)
    assert _gw(store, "gw-02")["rejected"] == [{"seq": 1, "cause": "unknown_key", "claimed_gw": "gw-02",
                                                "reason": f"unknown key id {stranger.kid!r}",
                                                "signer": stranger.kid, "times": 1}]


def test_unknown_key_frames_are_stored_after_the_key_is_trusted(store: ReceiverStore) -> None:
    """reverify() stores frames refused for an unknown key once the key was registered for their gateway."""
    newcomer = BatchSigner(Ed25519PrivateKey.generate())
    store.ingest(Chain(newcomer, gw="gw-02").data().frame)
    register(store, newcomer, "gw-02")
    results = store.reverify()

    assert [r.status for r in results] == ["stored"]
    report = _gw(store, "gw-02")
    assert (report["batches"], report["rejected"]) == (1, [])


def test_malformed_frame_is_counted_under_unknown(store: ReceiverStore) -> None:
    """Bytes that are not a frame are recorded under the name "unknown" and never acknowledged; no key is
    registered for that name, so the report counts them with the other unregistered names."""
    result = store.ingest(b"\x93\x01garbage")

    assert (result.status, result.gw, result.ackable) == ("rejected", "unknown", False)
    report = store.report()
    assert "unknown" not in report["gateways"]
    assert report["unregistered"]["sample"] == [{"gw": "unknown", "frames": 1}]


def test_same_rejected_frame_twice_is_listed_once(store: ReceiverStore) -> None:
    """A refused frame redelivered is recorded once, not once per delivery."""
    store.ingest(b"not a frame", topic_gw="gw-01")
    store.ingest(b"not a frame", topic_gw="gw-01")

    assert len(_gw(store)["rejected"]) == 1
    assert (_gw(store)["refusals"]["frames"], _gw(store)["refusals"]["deliveries"]) == (1, 2)


def test_frame_on_another_gateways_topic_is_rejected(store: ReceiverStore,
                                                     signer: BatchSigner) -> None:
    """A batch of gw-01 published on gw-02's topic is refused and not acknowledged to anyone."""
    result = store.ingest(Chain(signer).data().frame, topic_gw="gw-02")

    assert (result.status, result.gw, result.ackable, result.cause) == ("rejected", "gw-02", False, "topic")
    assert store.report()["gateways"]["gw-01"]["batches"] == 0


def test_declared_gap_is_not_missing(store: ReceiverStore, signer: BatchSigner) -> None:
    """Seqs declared lost by a signed gap batch are reported as declared_gaps, not as missing."""
    chain = Chain(signer)
    kept = chain.data().frame
    chain.data()
    chain.data()  # seqs 2 and 3 evicted on the gateway, never sent
    gap = chain.gap(2, 3, records=4)
    store.ingest(kept)
    store.ingest(gap.frame)

    report = _gw(store)
    assert report["missing"] == []
    assert report["declared_gaps"] == [{"first_seq": 2, "last_seq": 3, "batches": 2, "records": 4,
                                        "reason": "buffer_full"}]
    assert (report["batches"], report["records"], report["last_seq"]) == (2, 2, 4)


def test_declared_gap_covers_only_its_range(store: ReceiverStore,
                                            signer: BatchSigner) -> None:
    """A seq absent outside the declared range is still missing."""
    chain = Chain(signer)
    frames = [chain.data().frame for _ in range(4)]
    gap = chain.gap(2, 3)
    for f in (frames[0], gap.frame):
        store.ingest(f)

    assert _gw(store)["missing"] == [[4, 4]]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 8), st.integers(0, 6)), max_size=8),
       st.lists(st.tuples(st.integers(1, 60), st.integers(0, 6)), max_size=8))
def test_missing_is_absent_minus_declared(absent: list[tuple[int, int]], declared: list[tuple[int, int]]) -> None:
    """The report's subtraction of declared ranges from absent ones, against sets of seqs: same seqs, sorted,
    none empty, in one sweep whatever the declarations overlap. Absent ranges are disjoint and sorted, with a
    stored seq between two of them, as the store finds them."""
    ranges, end = [], 0
    for skip, n in absent:
        ranges.append([end + skip + 1, end + skip + 1 + n])
        end = ranges[-1][1] + 1
    holes = [(a, a + n) for a, n in declared]
    got = _subtract(ranges, holes)

    covered = {s for a, b in ranges for s in range(a, b + 1)} - {s for a, b in holes for s in range(a, b + 1)}
    assert {s for a, b in got for s in range(a, b + 1)} == covered
    assert got == sorted(got)
    assert all(a <= b for a, b in got)


def test_a_gap_batch_of_twenty_thousand_rows_reports_promptly(store: ReceiverStore, signer: BatchSigner) -> None:
    """One signed gap batch declaring every other seq of 40,000 one row at a time (20,000 rows, 62 KB): the
    report says exactly which seqs are missing. Subtracting declarations seq range by range once made this take
    over a minute, for every report of every gateway."""
    chain = Chain(signer)
    chain.seq, chain.prev = 40_000, bytes(32)
    rows = [[s, s, 1, 0, T0, T0, "buffer_full", [], 0] for s in range(2, 40_001, 2)]
    gap = chain._next("gap", wire.encode_body([], {"gap": wire.Table(GAP_COLUMNS, rows)}, T0), T0, T0)
    store.ingest(gap.frame)

    missing = _gw(store)["missing"]
    assert missing == [[s, s] for s in range(1, 40_000, 2)]


def test_declared_outage_is_a_collection_gap_not_records(store: ReceiverStore, signer: BatchSigner) -> None:
    """Outage rows of a gap batch are recorded as declared collection gaps: in the report and table
    declared_outages, counted as no measurement record, and changing nothing about missing seqs."""
    chain = Chain(signer)
    store.ingest(chain.data(rows=2).frame)
    store.ingest(chain.outage([T0 + 5_000, T0 + 65_000, "unclean_stop", ["plc1.ch4", "plc1.co"]]).frame)
    store.ingest(chain.data(rows=2).frame)

    report = _gw(store)
    assert report["declared_outages"] == [{"from_ms": T0 + 5_000, "to_ms": T0 + 65_000, "reason": "unclean_stop",
                                           "tags_count": 2}]
    assert (report["batches"], report["records"], report["missing"], report["declared_gaps"]) == (3, 4, [], [])
    with sqlite3.connect(store.path) as db:
        assert db.execute("SELECT gw, gap_seq, tags FROM declared_outages").fetchall() == [
            ("gw-01", 2, '["plc1.ch4", "plc1.co"]')]


@pytest.mark.parametrize(("scenario", "row", "cause"), [
    ("ends before it starts", [T0 + 2, T0 + 1, "unclean_stop", []], "body"),
    ("start as text", [str(T0), T0 + 1, "unclean_stop", []], "bounds"),  # from_ms places a row: every table
    ("end as text", [T0, str(T0), "unclean_stop", []], "bounds"),  # an absolute time of the outage table
    ("end beyond 2**53", [T0, 2**53 + 1, "unclean_stop", []], "bounds"),  # so is the header t1 enclosing it
    ("no reason", [T0, T0 + 1, None, []], "body"),
    ("tags not names", [T0, T0 + 1, "unclean_stop", [1, 2]], "body"),
])
def test_malformed_outage_row_refuses_the_batch(store: ReceiverStore, signer: BatchSigner, scenario: str,
                                                row: list[object], cause: str) -> None:
    """An outage row that is not a well-formed period refuses its batch whole, nothing of it kept."""
    result = store.ingest(Chain(signer).outage(row).frame)

    assert (result.status, result.cause, result.ackable) == ("rejected", cause, False), scenario
    assert (list(store.records()), _gw(store)["declared_outages"]) == ([], [])


def test_wrong_prev_is_a_chain_break(store: ReceiverStore, signer: BatchSigner) -> None:
    """A validly signed batch whose prev is not its predecessor's hash is stored and reported as a break."""
    chain = Chain(signer)
    store.ingest(chain.data().frame)
    chain.prev = bytes([7]) * 32
    result = store.ingest(chain.data().frame)

    assert result.status == "stored"
    assert [b["seq"] for b in _gw(store)["chain_breaks"]] == [2]
    assert "is not the hash of seq 1" in _gw(store)["chain_breaks"][0]["reason"]


def test_chain_break_found_when_predecessor_arrives_last(store: ReceiverStore,
                                                         signer: BatchSigner) -> None:
    """The break between n and n+1 is found whichever of the two is stored second."""
    chain = Chain(signer)
    first = chain.data()
    chain.prev = bytes([7]) * 32
    second = chain.data()
    store.ingest(second.frame)
    result = store.ingest(first.frame)

    assert [seq for seq, _ in result.chain_breaks] == [2]
    assert [b["seq"] for b in _gw(store)["chain_breaks"]] == [2]


def test_seq_one_must_start_at_genesis(store: ReceiverStore, signer: BatchSigner) -> None:
    """Seq 1 with a prev other than 32 zero bytes is a chain break."""
    chain = Chain(signer)
    chain.prev = bytes([1]) * 32
    store.ingest(chain.data().frame)

    assert [b["seq"] for b in _gw(store)["chain_breaks"]] == [1]


def test_signed_but_malformed_body_is_rejected_without_rows(store: ReceiverStore,
                                                            signer: BatchSigner) -> None:
    """A signed batch whose body does not decode is refused and leaves no record rows behind."""
    batch = wire.encode_frame(signer, gw="gw-01", seq=1, prev=wire.GENESIS_HASH, created=1, t0=1, t1=1,
                              kind="data", enc="none", body=b"\xc1")
    result = store.ingest(batch.frame)

    assert result.status == "rejected"
    assert list(store.records()) == []


def test_impossible_gap_range_is_rejected_without_rows(store: ReceiverStore,
                                                       signer: BatchSigner) -> None:
    """A gap batch declaring seqs at or after itself is refused, and none of its rows are kept."""
    chain = Chain(signer)
    result = store.ingest(chain.gap(1, 5).frame)

    assert result.status == "rejected"
    assert (list(store.records()), _gw(store)["declared_gaps"]) == ([], [])


_GAP_ROW = {"first_seq": 1, "last_seq": 1, "batches": 1, "records": 2, "from_ms": T0, "to_ms": T0 + 1000,
            "reason": "buffer_full", "tags": ["plc1.ch4"], "tags_omitted": 0}

# (case id, changes to a well-formed gap row of seq 2 declaring seq 1; None drops the column). A bad from_ms or
# to_ms is a bound of the frame code (tests/protocol/test_frame_hostile.py), refused before these checks.
MALFORMED_GAP_ROWS: list[tuple[str, dict[str, object]]] = [
    ("batches missing", {"batches": None}),
    ("records missing", {"records": None}),
    ("reason missing", {"reason": None}),
    ("tags missing", {"tags": None}),
    ("to_ms missing", {"to_ms": None}),
    ("batches nil", {"batches": _NIL}),
    ("batches a float", {"batches": 1.0}),
    ("records false", {"records": False}),
    ("records negative", {"records": -1}),
    ("reason 0", {"reason": 0}),
    ("reason nil", {"reason": _NIL}),
    ("tags holding an int", {"tags": ["plc1.ch4", 5]}),
    ("tags a map", {"tags": {}}),
    ("first_seq after last_seq", {"first_seq": 2, "last_seq": 1}),
    ("tags_omitted negative", {"tags_omitted": -1}),
    ("tags_omitted a string", {"tags_omitted": "3"}),
]


@pytest.mark.parametrize(("case", "changes"), MALFORMED_GAP_ROWS, ids=[c for c, _ in MALFORMED_GAP_ROWS])
def test_malformed_gap_row_refuses_the_gap_batch(store: ReceiverStore, signer: BatchSigner, case: str,
                                                 changes: dict[str, object]) -> None:
    """A gap row must have every column with its type: a missing or mistyped count, time, reason or tag list
    refuses the batch as a malformed body instead of becoming a 0 or an empty text in the declared loss."""
    chain = Chain(signer)
    store.ingest(chain.data().frame)
    row = {**_GAP_ROW, **{k: (None if v is _NIL else v) for k, v in changes.items() if v is not None}}
    cols = [c for c in GAP_COLUMNS if c not in changes or changes[c] is not None]
    body = wire.encode_body([], {"gap": wire.Table(cols, [[row[c] for c in cols]])}, T0)
    result = store.ingest(chain._next("gap", body, T0, T0 + 1000).frame)

    assert (result.status, result.cause) == ("rejected", "body"), case
    assert _gw(store)["declared_gaps"] == []


def test_well_formed_gap_row_is_declared(store: ReceiverStore, signer: BatchSigner) -> None:
    """The row the malformed cases start from is accepted as it is (so each case fails for its change)."""
    chain = Chain(signer)
    store.ingest(chain.data().frame)
    body = wire.encode_body([], {"gap": wire.Table(GAP_COLUMNS, [[_GAP_ROW[c] for c in GAP_COLUMNS]])}, T0)
    assert store.ingest(chain._next("gap", body, T0, T0 + 1000).frame).status == "stored"
    assert _gw(store)["declared_gaps"] == [{"first_seq": 1, "last_seq": 1, "batches": 1, "records": 2,
                                            "reason": "buffer_full"}]


def test_a_gap_row_without_the_appended_tags_omitted_column_lists_every_tag(store: ReceiverStore,
                                                                            signer: BatchSigner) -> None:
    """tags_omitted was appended to the gap table: a row without it (an older gateway's) is well formed and
    omits nothing; a row with it keeps the count beside the names it lists."""
    chain = Chain(signer)
    store.ingest(chain.data().frame)
    store.ingest(chain.data().frame)
    old_cols = [c for c in GAP_COLUMNS if c != "tags_omitted"]
    old = wire.encode_body([], {"gap": wire.Table(old_cols, [[_GAP_ROW[c] for c in old_cols]])}, T0)
    new = wire.encode_body([], {"gap": wire.Table(GAP_COLUMNS, [
        [{**_GAP_ROW, "first_seq": 2, "last_seq": 2, "tags_omitted": 904}[c] for c in GAP_COLUMNS]])}, T0)
    assert store.ingest(chain._next("gap", old, T0, T0 + 1000).frame).status == "stored"
    assert store.ingest(chain._next("gap", new, T0, T0 + 1000).frame).status == "stored"
    with sqlite3.connect(store.path) as db:
        assert db.execute("SELECT first_seq, tags_omitted FROM declared_gaps ORDER BY first_seq").fetchall() == [
            (1, 0), (2, 904)]


# (case id, a raw row's value holding a string of 4097 characters somewhere)
LONG_STRINGS: list[tuple[str, object]] = [
    ("the value", "é" * 4097),
    ("in a list", [1, ["x" * 4097]]),
    ("a map value", {"k": "x" * 4097}),
    ("a map key", {"x" * 4097: 1}),
    ("deep", [[[[{"a": [{"b": "x" * 4097}]}]]]]),
]


@pytest.mark.parametrize(("case", "value"), LONG_STRINGS, ids=[c for c, _ in LONG_STRINGS])
def test_a_string_over_4096_characters_anywhere_in_a_row_is_a_bound(store: ReceiverStore, signer: BatchSigner,
                                                                   case: str, value: object) -> None:
    """The bound on string values holds at any depth of a row, not only for its cells; 4096 characters pass."""
    chain = Chain(signer)
    cols = ["tag", "ts", "value", "quality", "reason"]
    long_body = wire.encode_body(["plc1.ch4"], {"raw": wire.Table(cols, [[0, 0, value, 0, None]])}, T0)
    result = store.ingest(chain._next("data", long_body, T0, T0 + 10).frame)
    assert (result.status, result.cause) == ("rejected", "bounds"), case

    ok_body = wire.encode_body(["plc1.ch4"], {"raw": wire.Table(cols, [[0, 0, {"k": ["x" * 4096]}, 0, None]])},
                               T0)
    assert store.ingest(Chain(signer)._next("data", ok_body, T0, T0 + 10).frame).status == "stored"


def test_records_are_stored_with_tag_and_absolute_time(store: ReceiverStore,
                                                       signer: BatchSigner) -> None:
    """Every row is stored with its table, full tag name, absolute timestamp and named columns."""
    batch = Chain(signer).data(rows=1, value=0.42)
    store.ingest(batch.frame)
    (row,) = store.records(tag="plc1.ch4")

    assert (row["table"], row["tag"], row["ts"], row["start"], row["mean"]) == (
        "win", "plc1.ch4", batch.t0, batch.t0, 0.42)


def test_report_survives_reopening(tmp_path: Path, signer: BatchSigner) -> None:
    """Everything the report says is in the file: a reopened store reports the same."""
    chain = Chain(signer)
    with ReceiverStore(tmp_path / "r.sqlite") as s:
        register(s, signer)
        for f in [chain.data().frame for _ in range(3)][::2]:
            s.ingest(f)
        s.ingest(b"junk")
        before = s.report()
    with ReceiverStore(tmp_path / "r.sqlite") as s:
        after = s.report()

    assert after == before
    assert after["gateways"]["gw-01"]["missing"] == [[2, 2]]


def test_values_json_cannot_carry_are_stored_readably(store: ReceiverStore,
                                                      signer: BatchSigner) -> None:
    """NaN, infinities and bytes in a row are stored as strings, not dropped and not invalid JSON."""
    cols = ["tag", "ts", "value", "quality", "reason"]
    body = wire.encode_body(["plc1.x"], {"raw": wire.Table(cols, [[0, 0, float("nan"), 0, None],
                                                                   [0, 1, b"\x01\xff", 0, None],
                                                                   [0, 2, float("-inf"), 0, None]])}, 1000)
    batch = wire.encode_frame(signer, gw="gw-01", seq=1, prev=wire.GENESIS_HASH, created=2000, t0=1000,
                              t1=1002, kind="data", enc="zstd", body=body)
    store.ingest(batch.frame)

    assert [r["value"] for r in store.records()] == ["-Infinity", "01ff", "NaN"]


def test_reverify_leaves_content_rejections_alone(store: ReceiverStore,
                                                  signer: BatchSigner) -> None:
    """reverify() retries only frames refused for their signature; a reused seq stays rejected once."""
    store.ingest(Chain(signer).data(value=1.0).frame)
    store.ingest(Chain(signer).data(value=2.0).frame)

    assert store.reverify() == []
    assert len(_gw(store)["rejected"]) == 1


V1_TABLES = """
CREATE TABLE batches (gw TEXT NOT NULL, seq INTEGER NOT NULL, hash BLOB NOT NULL, prev BLOB NOT NULL,
    kind TEXT NOT NULL, t0 INTEGER NOT NULL, t1 INTEGER NOT NULL, created INTEGER NOT NULL, kid TEXT NOT NULL,
    received_at INTEGER NOT NULL, records INTEGER NOT NULL, frame BLOB NOT NULL, PRIMARY KEY (gw, seq)) WITHOUT ROWID;
CREATE TABLE rejected (id INTEGER PRIMARY KEY, gw TEXT NOT NULL, seq INTEGER, cause TEXT NOT NULL,
    reason TEXT NOT NULL, received_at INTEGER NOT NULL, times INTEGER NOT NULL DEFAULT 1,
    frame_hash BLOB NOT NULL UNIQUE, frame BLOB NOT NULL);
"""


def test_a_version_1_database_is_brought_up_to_date(tmp_path: Path, signer: BatchSigner) -> None:
    """A receiver database written by format version 1 opens: its refusals gain claimed gateway, seq and signer
    (read from the kept frame) and the length of the kept (whole) frame, 'content' becomes 'seq_reused', and new
    frames are stored beside the old."""
    path = tmp_path / "v1.sqlite"
    chain = Chain(signer)
    first, second = chain.data(), chain.data()
    refused = Chain(signer).data(value=9.0).frame
    with sqlite3.connect(path) as db:
        db.executescript(V1_TABLES)
        db.execute("INSERT INTO batches VALUES ('gw-01', 1, ?, ?, 'data', 1, 2, 3, ?, 4, 2, ?)",
                   (first.hash, first.prev, signer.kid, first.frame))
        db.execute("INSERT INTO rejected (gw, seq, cause, reason, received_at, frame_hash, frame) "
                   "VALUES ('gw-01', 1, 'content', 'seq reused with different content', 5, ?, ?)",
                   (b"h" * 32, refused))
    with ReceiverStore(path) as store:
        register(store, signer)
        result = store.ingest(second.frame)
        report = store.report()["gateways"]["gw-01"]

    assert (result.status, result.chain_breaks) == ("stored", ())
    assert (report["batches"], report["missing"]) == (2, [])
    assert report["rejected"] == [{"seq": 1, "cause": "seq_reused", "reason": "seq reused with different content",
                                   "claimed_gw": "gw-01", "signer": signer.kid, "times": 1}]
    assert (report["refusals"]["bytes"], report["refusals"]["kept_bytes"]) == (len(refused), len(refused))


def _large_unknown_key_frame(seq: int) -> bytes:
    """A 150 KB frame of gw-01 signed by a key nobody registered: kept whole, if the budget allows."""
    values = [[0, i % 1000, seq + i / 7] for i in range(15_000)]
    body = wire.encode_body(["plc1.ch4"], {"raw": wire.Table(["tag", "ts", "value"], values)}, T0, enc="none")
    return wire.encode_frame(BatchSigner(Ed25519PrivateKey.generate()), gw="gw-01", seq=seq, prev=wire.GENESIS_HASH,
                             created=T0 + 1000, t0=T0, t1=T0 + 1000, kind="data", enc="none", body=body).frame


def test_a_format_3_database_counts_what_it_kept_whole_against_the_budget(tmp_path: Path,
                                                                         signer: BatchSigner) -> None:
    """Opening a database of format 3 (which kept such frames whole with no budget) tallies what it keeps, so
    the next frame refused for its key that would exceed the budget keeps only 64 KiB."""
    path = tmp_path / "v3.sqlite"
    old, new = _large_unknown_key_frame(1), _large_unknown_key_frame(2)
    with ReceiverStore(path) as store:
        register(store, signer)
        assert store.ingest(old, topic_gw="gw-01", topic_kind="data").cause == "unknown_key"
    with sqlite3.connect(path) as db:  # as format 3 left it: no tally of the frames kept whole
        db.execute("DELETE FROM refused_kept")
        db.execute("PRAGMA user_version = 3")
    with ReceiverStore(path, max_refused_bytes=len(old) + len(new) - 1) as store:
        assert store.ingest(new, topic_gw="gw-01", topic_kind="data").cause == "unknown_key"
        refusals = store.report()["gateways"]["gw-01"]["refusals"]

    assert len(old) > 65_536
    assert (refusals["frames"], refusals["not_kept_whole"], refusals["kept_bytes"]) == (2, 1, len(old) + 65_536)
