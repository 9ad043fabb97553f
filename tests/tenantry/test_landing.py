"""Landing segments: raw segments unchanged, normalized segments round-trip whole, both durable
(nothing half-written is ever visible, not even after a hard crash), and the chain digest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest

from collector_processors.registry import build_chain
from tenantry import landing, schemas
from tenantry.config import Config

REPO = Path(__file__).resolve().parents[2]
HOSTILE = "租户'; DROP TABLE spans; -- 🙂\x00"


def spans(n: int, tenant: str = "acme") -> pa.Table:
    rows = [{"tenant_id": tenant, "service_name": "checkout", "trace_id": f"{i:032x}", "span_id": f"{i:016x}",
             "name": HOSTILE, "kind": "server", "status_code": "ok", "start_time": 1_700_000_000_000_000_000 + i,
             "end_time": 1_700_000_000_000_000_000 + i, "duration_ms": 0.0, "attributes": [("note", HOSTILE)],
             "resource_attributes": [], "sample_weight": 1.0, "ingest_batch": "nseg:x"} for i in range(n)]
    return pa.Table.from_pylist(rows, schema=schemas.SPANS)


def quarantine(n: int) -> pa.Table:
    rows = [{"table": "spans", "tenant_id": "__unattributed__", "reason": "invalid_tenant_id",
             "processor": "attribute_tenant", "raw": json.dumps({"tenant_id": HOSTILE}), "ingest_batch": "nseg:x"}
            for _ in range(n)]
    return pa.Table.from_pylist(rows, schema=schemas.QUARANTINE)


# -- raw segments (format unchanged) --------------------------------------------------------------


def test_a_raw_segment_keeps_its_schema_name_and_requests(tmp_path):
    path = landing.write_segment(tmp_path, [("traces", b"\x0a\x00"), ("logs", b"")])
    assert path.name.startswith("seg-") and path.suffix == ".arrow"
    assert landing.read_segment(path).schema.equals(landing.SEGMENT)
    assert list(landing.iter_requests(path)) == [("traces", b"\x0a\x00"), ("logs", b"")]
    assert landing.list_segments(tmp_path) == [path] and landing.list_normalized_segments(tmp_path) == []


def test_a_raw_segment_refuses_an_unknown_signal_before_touching_disk(tmp_path):
    with pytest.raises(ValueError, match="unknown signal 'profiles'"):
        landing.write_segment(tmp_path / "new", [("profiles", b"x")])
    assert not (tmp_path / "new").exists()


# -- normalized segments ----------------------------------------------------------------------------


def test_a_normalized_segment_round_trips_every_table_and_its_metadata(tmp_path):
    acct = {"spans": {"in": 5, "kept": 3, "quarantined": 2}}
    path = landing.write_normalized_segment(tmp_path, {"spans": spans(3), "quarantine": quarantine(2)},
                                            "sha256:abc", accounting=acct)
    tables, meta = landing.read_normalized_segment(path)
    assert tables["spans"].equals(spans(3)) and tables["quarantine"].equals(quarantine(2))
    assert meta[landing.META_PROCESSED_BY] == "sha256:abc"
    assert meta[landing.META_INGEST_BATCH] == f"nseg:{path.name}"
    assert json.loads(meta[landing.META_ACCOUNTING]) == acct
    assert landing.list_normalized_segments(tmp_path) == [path] and landing.list_segments(tmp_path) == []


def test_the_metadata_alone_can_be_read_to_plan_a_run(tmp_path):
    path = landing.write_normalized_segment(tmp_path, {"spans": spans(3)}, "sha256:abc")
    assert landing.normalized_segment_metadata(path) == landing.read_normalized_segment(path)[1]
    with pytest.raises(landing.NormalizedSegmentError, match="not a normalized segment"):
        landing.normalized_segment_metadata(landing.write_segment(tmp_path, [("traces", b"")]))


def test_iterating_a_normalized_segment_gives_table_rows_metadata_chunks(tmp_path):
    path = landing.write_normalized_segment(tmp_path, {"spans": spans(2), "quarantine": quarantine(1)}, "d")
    chunks = landing.iter_normalized_segment(path)
    got = {(t, data.num_rows, meta[landing.META_PROCESSED_BY]) for t, data, meta in chunks}
    assert got == {("spans", 2, "d"), ("quarantine", 1, "d")}


def test_empty_tables_are_left_out_and_an_empty_flush_is_still_a_valid_segment(tmp_path):
    path = landing.write_normalized_segment(tmp_path, {"spans": spans(0), "logs": schemas.empty("logs")}, "d")
    tables, meta = landing.read_normalized_segment(path)
    assert tables == {} and meta[landing.META_PROCESSED_BY] == "d"


@pytest.mark.parametrize("tables,match", [
    ({"spans; DROP TABLE x": spans(1)}, "unknown table"),
    ({"cost_lines": schemas.empty("cost_lines")}, "unknown table"),
    ({"spans": quarantine(1)}, "does not have the schema"),
    ({"spans": spans(1).drop_columns(["name"])}, "does not have the schema"),
])
def test_unknown_tables_and_wrong_schemas_are_refused_before_touching_disk(tmp_path, tables, match):
    with pytest.raises(ValueError, match=match):
        landing.write_normalized_segment(tmp_path / "new", tables, "d")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("name", ["seg-1.arrow", "nseg-1.parquet", "nseg-../../etc.arrow", "../nseg-1.arrow"])
def test_a_segment_name_that_is_not_nseg_arrow_in_the_folder_is_refused(tmp_path, name):
    with pytest.raises(ValueError, match="must look like nseg-"):
        landing.write_normalized_segment(tmp_path, {}, "d", name=name)


def test_a_large_flush_round_trips(tmp_path):
    big = spans(50_000)
    path = landing.write_normalized_segment(tmp_path, {"spans": big}, "d")
    assert landing.read_normalized_segment(path)[0]["spans"].equals(big)


@pytest.mark.parametrize("damage", ["truncate", "raw_segment", "garbage", "empty"])
def test_a_damaged_or_foreign_file_is_a_clear_error(tmp_path, damage):
    good = landing.write_normalized_segment(tmp_path, {"spans": spans(10)}, "d")
    bad = tmp_path / "nseg-bad.arrow"
    if damage == "truncate":
        bad.write_bytes(good.read_bytes()[:-100])
    elif damage == "raw_segment":
        bad = landing.write_segment(tmp_path, [("traces", b"")])
    elif damage == "garbage":
        bad.write_bytes(b"ARROW1" + os.urandom(500))
    else:
        bad.write_bytes(b"")
    with pytest.raises(landing.NormalizedSegmentError, match="not a (readable )?normalized segment"):
        landing.read_normalized_segment(bad)


def test_a_stored_table_with_a_foreign_schema_is_refused_on_read(tmp_path):
    inner = pa.BufferOutputStream()
    with pa.ipc.new_stream(inner, pa.schema([("x", pa.int64())])) as w:
        w.write_table(pa.table({"x": [1]}))
    schema = landing.NORMALIZED_SEGMENT.with_metadata({landing.META_FORMAT: landing.NORMALIZED_FORMAT})
    path = tmp_path / "nseg-forged.arrow"
    with pa.OSFile(str(path), "wb") as f, pa.ipc.new_file(f, schema) as w:
        w.write_table(pa.table({"table": ["spans"], "rows": [1], "data": [inner.getvalue().to_pybytes()]},
                               schema=schema))
    with pytest.raises(landing.NormalizedSegmentError, match="expected schemas.LAKE_TABLES"):
        landing.read_normalized_segment(path)


# -- durability -------------------------------------------------------------------------------------


def test_a_failure_while_writing_leaves_neither_a_segment_nor_a_temp_file(tmp_path, monkeypatch):
    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(landing.os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        landing.write_normalized_segment(tmp_path, {"spans": spans(5)}, "d")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("when", ["before_fsync", "before_rename"])
def test_a_process_killed_mid_write_leaves_no_visible_segment(tmp_path, when):
    # os._exit is a hard crash: no finally, no cleanup, exactly like a power cut for visibility
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(REPO)!r})
        from tenantry import landing
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_landing import spans
        if {when!r} == "before_fsync":
            landing.os.fsync = lambda fd: os._exit(9)
        else:
            landing.os.rename = lambda a, b: os._exit(9)
        landing.write_normalized_segment({str(tmp_path)!r}, {{"spans": spans(1000)}}, "d")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 9, proc.stderr
    assert landing.list_normalized_segments(tmp_path) == [] and landing.list_segments(tmp_path) == []
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert all(n.startswith(".nseg-") and n.endswith(".tmp") for n in leftovers)  # hidden from every reader


# -- chain digest -----------------------------------------------------------------------------------


def test_the_same_configuration_gives_the_same_digest_in_another_process():
    procs = [{"attribute_tenant": {"policy": "quarantine"}}, "validate", {"redact": {"blocked_keys": ["pwd"]}}]
    here = landing.chain_digest(build_chain(Config(processors=procs)))
    there = subprocess.run(
        [sys.executable, "-c", "import sys; from tenantry import landing; from tenantry.config import Config; "
         "from collector_processors.registry import build_chain; "
         f"print(landing.chain_digest(build_chain(Config(processors={procs!r}))))"],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60,
    )
    assert there.stdout.strip() == here and here.startswith("sha256:")


@pytest.mark.parametrize("other", [
    [{"attribute_tenant": {"policy": "unattributed"}}, "validate"],
    ["validate", {"attribute_tenant": {"policy": "quarantine"}}],
    [{"attribute_tenant": {"policy": "quarantine"}}, "validate/strict"],
    [{"attribute_tenant": {"policy": "quarantine"}}, {"validate": {"max_future": "2h"}}],
    [{"attribute_tenant": {"policy": "quarantine"}}, "validate", "sample"],
])
def test_any_change_to_the_chain_changes_the_digest(other):
    base = [{"attribute_tenant": {"policy": "quarantine"}}, "validate"]
    assert landing.chain_digest(build_chain(Config(processors=base))) != \
        landing.chain_digest(build_chain(Config(processors=other)))


def test_a_secret_changes_the_digest_but_never_appears_in_it():
    def digest(key):
        return landing.chain_digest(build_chain(Config(processors=[{"redact": {"mode": "hash", "hash_key": key}}])))

    a, b = digest("a-secret-of-16-chars-or-more"), digest("another-secret-16-chars")
    assert a != b and "secret" not in a


def test_the_tenant_catalog_tiers_are_part_of_the_digest():
    def digest(tier):
        return landing.chain_digest(build_chain(Config(tenants={"acme": {"tier": tier}})))

    assert digest("free") != digest("pro")


# -- compressed segments ----------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["lz4", "zstd", "LZ4 "])
def test_compressed_segments_round_trip_smaller_and_need_no_option_to_read(tmp_path, codec):
    bodies = [("traces", HOSTILE.encode() * 200 + bytes([i])) for i in range(20)]
    plain = landing.write_segment(tmp_path / "plain", bodies)
    packed = landing.write_segment(tmp_path / "packed", bodies, compression=codec)
    assert list(landing.iter_requests(packed)) == bodies
    assert packed.stat().st_size < plain.stat().st_size / 3
    big = spans(20_000)
    plain = landing.write_normalized_segment(tmp_path / "plain", {"spans": big, "quarantine": quarantine(5)}, "d")
    packed = landing.write_normalized_segment(tmp_path / "packed", {"spans": big, "quarantine": quarantine(5)}, "d",
                                              compression=codec)
    tables, meta = landing.read_normalized_segment(packed)
    assert tables["spans"].equals(big) and tables["quarantine"].equals(quarantine(5))
    assert meta[landing.META_PROCESSED_BY] == "d"
    assert packed.stat().st_size < plain.stat().st_size / 2


@pytest.mark.parametrize("codec", ["gzip", "snappy", "", "'; drop table spans; --", "zstd:-5"])
def test_an_unknown_codec_is_refused_before_touching_disk(tmp_path, codec):
    with pytest.raises(ValueError, match="segment compression .* is not one of none, lz4, zstd"):
        landing.write_segment(tmp_path / "raw", [("traces", b"x")], compression=codec)
    with pytest.raises(ValueError, match="segment compression .* is not one of none, lz4, zstd"):
        landing.write_normalized_segment(tmp_path / "norm", {"spans": spans(1)}, "d", compression=codec)
    assert not (tmp_path / "raw").exists() and not (tmp_path / "norm").exists()


@pytest.mark.parametrize("codec", ["lz4", "zstd"])
@pytest.mark.parametrize("cut", [100, 0.5])
def test_a_truncated_compressed_segment_is_a_clear_error(tmp_path, codec, cut):
    good = landing.write_normalized_segment(tmp_path, {"spans": spans(5_000)}, "d", compression=codec)
    data = good.read_bytes()
    bad = tmp_path / "nseg-bad.arrow"
    bad.write_bytes(data[:-cut] if isinstance(cut, int) else data[: int(len(data) * cut)])
    with pytest.raises(landing.NormalizedSegmentError, match="not a (readable )?normalized segment"):
        landing.read_normalized_segment(bad)


@pytest.mark.parametrize("bad", ["offset past the data", "offsets backwards", "null data", "data not an arrow stream"])
def test_a_segment_with_corrupt_table_offsets_is_refused_with_its_name(tmp_path, bad):
    """Tables are zero-copy slices of the file, so the slices' offsets are checked before use."""
    import numpy as np

    good = landing.write_normalized_segment(tmp_path / "ok", {"spans": spans(3)}, processed_by="d", ingest_batch="b")
    raw = good.read_bytes()
    with pa.memory_map(str(good)) as src:
        outer = pa.ipc.open_file(src).read_all()
    size = len(outer.column("data").chunk(0).buffers()[2])
    offsets = np.array([0, size], np.int64).tobytes()
    assert raw.count(offsets) == 1
    path = tmp_path / "nseg-forged.arrow"
    if bad in ("offset past the data", "offsets backwards"):  # patched in the file: writers refuse these
        forged = np.array([0, size + 4096] if bad == "offset past the data" else [64, 8], np.int64).tobytes()
        path.write_bytes(raw.replace(offsets, forged))
    else:
        data = pa.array([b"not an arrow stream at all"], pa.large_binary())
        if bad == "null data":
            data = pa.Array.from_buffers(pa.large_binary(), 1, [pa.py_buffer(bytes([0])), *outer.column("data").chunk(0).buffers()[1:]],
                                         null_count=1)
        table = pa.Table.from_arrays([outer.column("table"), outer.column("rows"), data], schema=outer.schema)
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
            w.write_table(table)
    with pytest.raises(landing.NormalizedSegmentError, match="nseg-forged.arrow"):
        landing.read_normalized_segment(path)
