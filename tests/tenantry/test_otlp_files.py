"""tenantry.otlp.files: every input format, stable ingest ids, bounded reads, nothing raised."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
from test_otlp_builders import log_request, metric_request, trace_request

from tenantry import landing
from tenantry.otlp import decode_files, iter_file

# the shared OTLP examples sit beside the checkout (CI copies shared/ next to its clone)
FIXTURES = next(
    (p for p in (Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "otlp",
                 Path("/work/shared/fixtures/otlp")) if p.is_dir()),
    Path("/work/shared/fixtures/otlp"),
)


def counts(tables) -> dict[str, int]:
    return {k: t.num_rows for k, t in tables.items() if t.num_rows}


def one(path, **kw):
    chunks = list(iter_file(path, **kw))
    assert len(chunks) == 1
    return chunks[0]


def details(tables) -> list[str]:
    return tables["quarantine"].column("detail").to_pylist()


@pytest.fixture
def fixtures_dir(tmp_path):
    for name in ("trace.json", "logs.json", "metrics.json"):
        shutil.copy(FIXTURES / name, tmp_path / name)
    return tmp_path


def test_json_files_detect_their_signal_from_the_top_level_key(fixtures_dir):
    assert counts(one(fixtures_dir / "trace.json")[1]) == {"spans": 1}
    assert counts(one(fixtures_dir / "logs.json")[1]) == {"logs": 1}
    assert counts(one(fixtures_dir / "metrics.json")[1]) == {"metric_points": 2, "quarantine": 1}


def test_ingest_batch_is_stable_for_the_same_content_and_differs_otherwise(fixtures_dir, tmp_path):
    first, tables = one(fixtures_dir / "trace.json")
    copy = tmp_path / "elsewhere.json"
    shutil.copy(fixtures_dir / "trace.json", copy)
    assert one(fixtures_dir / "trace.json")[0] == first == one(copy)[0]
    assert first.startswith("file:") and len(first) == len("file:") + 32
    assert tables["spans"].column("ingest_batch").to_pylist() == [first]
    assert one(fixtures_dir / "logs.json")[0] != first


def test_jsonl_mixes_signals_and_a_bad_line_is_one_quarantine_row(tmp_path):
    lines = [json.dumps(json.loads((FIXTURES / n).read_text())) for n in ("trace.json", "logs.json", "metrics.json")]
    lines.insert(1, '{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "nothex"}]}]}]}')
    lines.insert(2, "")
    path = tmp_path / "collector.jsonl"
    path.write_text("\n".join(lines + ["[1,2]"]) + "\n")
    batch, tables = one(path)
    assert batch.endswith(":0")
    assert counts(tables) == {"spans": 1, "logs": 1, "metric_points": 2, "quarantine": 3}
    msgs = details(tables)
    assert any("line 2" in m and "traceId" in m for m in msgs) and any("line 6" in m for m in msgs)


def test_jsonl_is_yielded_in_chunks_with_distinct_stable_ids(tmp_path):
    line = json.dumps(json.loads((FIXTURES / "trace.json").read_text()))
    path = tmp_path / "many.jsonl"
    path.write_text((line + "\n") * 10)
    chunks = list(iter_file(path, chunk_bytes=3 * len(line)))
    assert [b.rsplit(":", 1)[1] for b, _ in chunks] == ["0", "1", "2", "3"]
    assert sum(t["spans"].num_rows for _, t in chunks) == 10
    assert [b for b, _ in chunks] == [b for b, _ in iter_file(path, chunk_bytes=3 * len(line))]


@pytest.mark.parametrize("name,signal", [("traces-0001.pb", "spans"), ("app.logs.pb", "logs"),
                                         ("metrics.pb", "metric_points"), ("data.pb", None)])
def test_pb_files_take_the_signal_from_the_name_or_infer_it(tmp_path, name, signal):
    reqs = {"spans": trace_request([{}, {}]), "logs": log_request([{"body": "x"}, {"body": "y"}]),
            "metric_points": metric_request([{"name": "g", "kind": "gauge", "points": [{"as_int": 1}, {"as_int": 2}]}])}
    for table, req in reqs.items():
        if signal not in (None, table):
            continue
        (tmp_path / name).write_bytes(req.SerializeToString())
        assert counts(one(tmp_path / name)[1]) == {table: 2}


def test_pb_that_cannot_be_identified_is_one_quarantine_row(tmp_path):
    path = tmp_path / "mystery.pb"
    path.write_bytes(os.urandom(2048))
    _, tables = one(path)
    assert counts(tables) == {"quarantine": 1}
    assert "put trace, log or metric in the file name" in details(tables)[0]


def test_gzip_variants_decode_like_the_plain_files(fixtures_dir, tmp_path):
    for name in ("trace.json", "logs.json"):
        gz = tmp_path / (name + ".gz")
        gz.write_bytes(gzip.compress((fixtures_dir / name).read_bytes()))
        assert counts(one(gz)[1]) == counts(one(fixtures_dir / name)[1])
    pb = tmp_path / "spans.pb.gz"
    pb.write_bytes(gzip.compress(trace_request([{}]).SerializeToString()))
    assert counts(one(pb)[1]) == {"spans": 1}


def test_gzip_bomb_is_quarantined_without_reading_it_all(tmp_path):
    path = tmp_path / "bomb.json.gz"
    with gzip.open(path, "wb", compresslevel=9) as f:
        chunk = b"\0" * (1 << 20)
        for _ in range(64):
            f.write(chunk)
    assert path.stat().st_size < 200_000
    _, tables = one(path, max_decompressed_bytes=8 << 20)
    assert counts(tables) == {"quarantine": 1}
    assert "more than 8388608 bytes after decompression" in details(tables)[0]


def test_jsonl_gzip_bomb_keeps_the_lines_before_the_limit(tmp_path):
    line = json.dumps(json.loads((FIXTURES / "trace.json").read_text())).encode() + b"\n"
    path = tmp_path / "bomb.jsonl.gz"
    path.write_bytes(gzip.compress(line * 3 + b" " * (4 << 20)))
    chunks = list(iter_file(path, max_decompressed_bytes=1 << 20))
    spans = sum(t["spans"].num_rows for _, t in chunks)
    quarantined = [d for _, t in chunks for d in details(t)]
    assert spans == 3 and len(quarantined) == 1 and "the rest of the file is not decoded" in quarantined[0]


def test_corrupt_gzip_and_unsupported_and_empty_files_are_quarantine_rows(tmp_path):
    bad_gz = tmp_path / "x.json.gz"
    bad_gz.write_bytes(b"\x1f\x8b\x08\x00garbage")
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"")
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    for path, words in ((bad_gz, "cannot read"), (empty, "empty"), (other, "unsupported file type")):
        _, tables = one(path)
        assert counts(tables) == {"quarantine": 1}, path
        assert words in details(tables)[0]
        assert tables["quarantine"].column("reason")[0].as_py() == "malformed_request"


def test_directory_is_a_quarantine_row_and_a_missing_path_raises(tmp_path):
    d = tmp_path / "dir.json"
    d.mkdir()
    assert counts(one(d)[1]) == {"quarantine": 1}
    with pytest.raises(FileNotFoundError):
        list(iter_file(tmp_path / "nope.json"))


def test_landing_segments_decode_every_request_under_one_batch_id(tmp_path):
    seg = landing.write_segment(tmp_path, [
        ("traces", trace_request([{}, {}]).SerializeToString()),
        ("logs", log_request([{"body": "b"}]).SerializeToString()),
        ("traces", b"\xff\xff garbage"),
    ])
    batch, tables = one(seg)
    assert batch == f"seg:{seg.name}"
    assert counts(tables) == {"spans": 2, "logs": 1, "quarantine": 1}
    assert set(tables["spans"].column("ingest_batch").to_pylist()) == {batch}
    gz = tmp_path / (seg.name + ".gz")
    gz.write_bytes(gzip.compress(seg.read_bytes()))
    assert counts(one(gz)[1]) == counts(tables)


def test_truncated_segment_is_a_quarantine_row(tmp_path):
    seg = landing.write_segment(tmp_path, [("traces", trace_request([{}]).SerializeToString())])
    seg.write_bytes(seg.read_bytes()[:50])
    assert counts(one(seg)[1]) == {"quarantine": 1}


def test_decode_files_in_two_processes_matches_one_process(fixtures_dir):
    paths = sorted(fixtures_dir.iterdir()) * 2
    serial = [(b, counts(t)) for b, t in decode_files(paths)]
    parallel = list(decode_files(paths, processes=2))
    assert [(b, counts(t)) for b, t in parallel] == serial
    assert all(set(t) == {"spans", "logs", "metric_points", "usage_events", "quarantine"} for _, t in parallel)


def test_decode_files_in_parallel_raises_for_a_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError):
        list(decode_files([tmp_path / "missing.pb"], processes=2))


def test_a_decode_pool_is_reused_across_calls_and_matches_one_process(fixtures_dir):
    from tenantry.otlp import DecodePool

    paths = sorted(fixtures_dir.iterdir())
    serial = [(b, counts(t)) for b, t in decode_files(paths)]
    with DecodePool(2) as pool:
        first = [(b, counts(t)) for b, t in decode_files(paths, pool=pool)]
        executor = pool.executor
        second = [(b, counts(t)) for b, t in decode_files(paths, pool=pool)]
        assert pool.executor is executor  # the same workers served both calls
    assert first == second == serial
    assert pool._executor is None  # leaving the block stopped the workers


def test_a_decode_pool_survives_a_missing_path_and_an_early_stop(fixtures_dir, tmp_path):
    from tenantry.otlp import DecodePool

    paths = sorted(fixtures_dir.iterdir())
    with DecodePool(2) as pool:
        with pytest.raises(FileNotFoundError):
            list(decode_files([tmp_path / "missing.pb"], pool=pool))
        next(iter(decode_files(paths * 3, pool=pool)))  # the caller stops after one chunk
        assert len(list(decode_files(paths, pool=pool))) >= len(paths)


def test_decode_workers_exit_when_their_host_is_killed(fixtures_dir):
    import os
    import signal
    import subprocess
    import sys
    import time

    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from tenantry.otlp import DecodePool, decode_files\n"
        "if __name__ == '__main__':\n"
        "    pool = DecodePool(2)\n"
        f"    list(decode_files(sorted(Path({str(fixtures_dir)!r}).iterdir()), pool=pool))\n"
        "    print(' '.join(str(p) for p in pool.executor._processes), flush=True)\n"
        "    time.sleep(60)\n"
    )
    host = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    workers = [int(p) for p in host.stdout.readline().split()]
    assert len(workers) == 2
    host.send_signal(signal.SIGKILL)  # no chance to shut the pool down
    host.wait(10)

    def alive(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        with open(f"/proc/{pid}/stat") as f:  # a zombie (exited, not yet reaped) counts as gone
            return f.read().split(")")[-1].split()[0] != "Z"

    deadline = time.monotonic() + 15
    while any(alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(p) for p in workers), "decode workers outlived their host"


def test_a_decode_pool_needs_at_least_one_process():
    from tenantry.otlp import DecodePool

    with pytest.raises(ValueError, match="at least 1"):
        DecodePool(0)


def _trace_files(tmp_path, n_files: int, spans: int = 100):
    paths = []
    for f in range(n_files):
        specs = [{"attrs": {"tenant.id": f"t{(f * spans + i) % 7}", "http.route": f"/r{i % 3}"}, "name": f"op-{f}"}
                 for i in range(spans)]
        p = tmp_path / f"traces-{f:03d}.pb"
        p.write_bytes(trace_request(specs, resource={"service.name": f"svc-{f % 2}"}, resources=1 + f % 2)
                      .SerializeToString())
        paths.append(p)
    return paths


def test_decode_group_equals_decoding_each_file_with_each_rows_own_ingest_batch(tmp_path):
    from tenantry.otlp.files import decode_group

    paths = _trace_files(tmp_path, 5)
    (tmp_path / "spans-gz.pb.gz").write_bytes(gzip.compress(paths[0].read_bytes()))
    paths.append(tmp_path / "spans-gz.pb.gz")
    one_by_one = [t for p in paths for _, t in iter_file(p)]
    grouped = decode_group(paths)
    assert len(grouped) == 1  # all six requests in one pass
    expected = pa.concat_tables([t["spans"] for t in one_by_one])
    assert grouped[0][1]["spans"].equals(expected)
    assert grouped[0][1]["spans"].column("ingest_batch").to_pylist() == expected.column("ingest_batch").to_pylist()


def test_decode_group_decodes_odd_files_one_by_one(tmp_path, fixtures_dir):
    from tenantry.otlp.files import decode_group

    paths = _trace_files(tmp_path, 2) + [fixtures_dir / "logs.json"]
    (tmp_path / "traces-bad.pb").write_bytes(b"\xff\x00 not protobuf")
    (tmp_path / "traces-empty.pb").write_bytes(b"")
    paths += [tmp_path / "traces-bad.pb", tmp_path / "traces-empty.pb"]
    grouped = decode_group(paths)
    total = {}
    for _, t in grouped:
        for k, v in counts(t).items():
            total[k] = total.get(k, 0) + v
    single = {}
    for p in paths:
        for _, t in iter_file(p):
            for k, v in counts(t).items():
                single[k] = single.get(k, 0) + v
    assert total == single and single["quarantine"] >= 2


def test_decode_groups_in_a_pool_matches_one_process(tmp_path):
    from tenantry.otlp import DecodePool, decode_groups

    paths = _trace_files(tmp_path, 9)
    serial = pa.concat_tables([t["spans"] for _, t in decode_groups(paths, group_files=4)])
    with DecodePool(2) as pool:
        parallel = pa.concat_tables([t["spans"] for _, t in decode_groups(paths, pool=pool, group_files=4)])
    assert parallel.equals(serial) and serial.num_rows == sum(100 * (1 + f % 2) for f in range(9))


def test_decode_groups_sizes_groups_for_the_decoder_and_keeps_every_row_in_order(tmp_path, monkeypatch):
    from tenantry.otlp import decode_groups
    from tenantry.otlp import files as files_mod
    from tenantry.otlp import spans as spans_mod

    paths = _trace_files(tmp_path, 9)
    one_by_one = pa.concat_tables([t["spans"] for _, t in decode_groups(paths, group_files=1)])
    sizes = [p.stat().st_size for p in paths]
    monkeypatch.setattr(files_mod, "C_GROUP_BYTES", sizes[0] + sizes[1])  # two files fill a group
    calls = []
    real = files_mod.decode_group
    monkeypatch.setattr(files_mod, "decode_group", lambda g, *a: calls.append(len(g)) or real(g, *a))
    by_default = pa.concat_tables([t["spans"] for _, t in decode_groups(paths)])
    assert by_default.equals(one_by_one)
    if spans_mod.accelerated():
        assert calls == [2, 2, 2, 2, 1]
    else:
        assert calls == [files_mod.NUMPY_GROUP_FILES, files_mod.NUMPY_GROUP_FILES, 1]
    calls.clear()
    monkeypatch.setattr(spans_mod, "_fastspans", None)  # the numpy decoder: fixed small groups
    assert pa.concat_tables([t["spans"] for _, t in decode_groups(paths)]).equals(one_by_one)
    assert calls == [4, 4, 1]


def test_groups_by_size_close_on_bytes_or_files_and_tolerate_missing_files(tmp_path):
    from tenantry.otlp.files import _groups_by_size

    paths = []
    for i, size in enumerate([5, 5, 20, 1, 1, 1, 1]):
        (tmp_path / f"f{i}").write_bytes(b"x" * size)
        paths.append(str(tmp_path / f"f{i}"))
    paths.insert(3, str(tmp_path / "gone"))
    groups = list(_groups_by_size(paths, max_bytes=10, max_files=3))
    assert [len(g) for g in groups] == [2, 1, 3, 2] and sum(groups, []) == paths
    assert list(_groups_by_size([], 10, 3)) == []
