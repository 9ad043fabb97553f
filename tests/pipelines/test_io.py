"""pipelines.io: the Arrow coder, read-ahead decoding and background lake writes."""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from pipelines import io
from tenantry import synthetic
from tenantry.warehouse import Warehouse


def test_arrow_coder_round_trips_and_estimates_without_encoding():
    table = synthetic.spans(500, tenants=3).replace_schema_metadata({b"k": b"v"})
    coder = beam.coders.registry.get_coder(pa.Table)
    assert isinstance(coder, io.ArrowTableCoder)
    back = coder.decode(coder.encode(table))
    assert back.equals(table) and back.schema.metadata == {b"k": b"v"}
    assert coder.get_impl().estimate_size(table) >= table.nbytes // 2


def _parquet_inputs(tmp_path, files=2, rows=3_000):
    for f in range(files):
        pq.write_table(synthetic.spans(rows, tenants=4, seed=f), tmp_path / f"spans-{f}.parquet", row_group_size=1_000)
    return io.read_tasks(io.discover([tmp_path]))


@pytest.mark.parametrize("threads", ["0", "2"])
def test_read_ahead_and_background_writes_give_every_part_once(tmp_path, monkeypatch, threads):
    monkeypatch.setenv("TENANTRY_IO_THREADS", threads)
    monkeypatch.setattr(io, "_BACKGROUND", [])
    (tmp_path / "in").mkdir()
    tasks = _parquet_inputs(tmp_path / "in")
    wh = Warehouse.open(tmp_path / "wh")
    with beam.Pipeline(runner=FnApiRunner()) as p:
        (p | beam.Create(tasks) | beam.ParDo(io.ReadAhead(65536)).with_output_types(io.Chunk)
         | beam.ParDo(io.WriteLake(str(wh.root), "r1")))
    parts = sorted(f.name for f in (wh.lake / "spans" / "run=r1").glob("*.parquet"))
    assert len(parts) == len(tasks) == 6
    assert sum(pq.ParquetFile(wh.lake / "spans" / "run=r1" / f).metadata.num_rows for f in parts) == 6_000


def test_a_failed_background_write_fails_the_pipeline(tmp_path, monkeypatch):
    monkeypatch.setenv("TENANTRY_IO_THREADS", "2")
    monkeypatch.setattr(io, "_BACKGROUND", [])
    good = ("spans", "p0", synthetic.spans(10))
    bad = ("spans", "bad part name!", synthetic.spans(10))  # not a valid file name: write_part raises
    with pytest.raises(Exception, match="not allowed"), beam.Pipeline(runner=FnApiRunner()) as p:
        p | beam.Create([good, bad]) | beam.ParDo(io.WriteLake(str(tmp_path / "wh"), "r1"))


def test_discover_hashes_many_files_in_parallel_in_a_stable_order(tmp_path):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from tenantry.otlp.files import content_id

    names = [f"req-{i:03d}.pb" for i in range(40)]
    for i, name in enumerate(reversed(names)):  # written in the opposite order
        req = ExportTraceServiceRequest()
        req.resource_spans.add().scope_spans.add().spans.add(name=f"op-{i}", trace_id=bytes(16), span_id=bytes(8))
        (tmp_path / name).write_bytes(req.SerializeToString())
    (tmp_path / "copy.pb").write_bytes((tmp_path / names[5]).read_bytes())  # same content: one input
    (tmp_path / "notes.txt").write_text("not an input")
    found = io.discover([tmp_path])
    # sorted by name; the copy sorts first, so it stands for the content it shares with req-005
    expect = ["copy.pb", *(n for n in names if n != names[5])]
    assert [f.path for f in found] == [str(tmp_path / n) for n in expect]
    assert [f.ingest_id for f in found] == [content_id(tmp_path / n) for n in expect]


def test_discover_reports_a_bad_file_among_many(tmp_path):
    for i in range(20):
        pq.write_table(synthetic.spans(10, tenants=2, seed=i), tmp_path / f"spans-{i:02d}.parquet")
    (tmp_path / "spans-07.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(io.InputError, match="spans-07.parquet: not a readable Parquet file"):
        io.discover([tmp_path])


def test_discover_stops_hashing_at_the_first_bad_file(tmp_path, monkeypatch):
    import time

    for i in range(200):
        (tmp_path / f"req-{i:03d}.pb").write_bytes(b"\x0a\x00")
    (tmp_path / "req-002.parquet").write_bytes(b"not parquet")  # sorts third
    calls = []
    real = io._classify

    def slow(p):  # hashing a big file takes a while: here 5 ms a file
        calls.append(p)
        time.sleep(0.005)
        return real(p)

    monkeypatch.setattr(io, "_classify", slow)
    with pytest.raises(io.InputError, match="req-002.parquet"):
        io.discover([tmp_path])
    assert len(calls) < 150  # Executor.map cancels the files still queued once the error is raised
