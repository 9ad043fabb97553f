"""Compaction: many small runs become one, atomically; every figure, the ledger's dedup and
idempotent re-runs stay exactly as they were; a crash leaves old or new visible, never both."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import pyarrow.parquet as pq
from click.testing import CliRunner

from pipelines.batch import run_batch
from pipelines.stream import run_stream
from tenantry import landing, querying
from tenantry.cli import main
from tenantry.compaction import compact
from tenantry.warehouse import Warehouse

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipelines"))
from test_stream import figures, land  # noqa: E402

VIEWS = ("select * from ledger_balance order by all", "select * from processor_stats order by all",
         "select count(*), count(distinct event_id) from ledger_evidence")


def _snapshot(wh: Path) -> dict:
    out = figures(wh)
    for sql in VIEWS:
        out[sql] = querying.run(str(wh), sql).rows
    return out


def _streamed(tmp_path, segments=6):
    seg, wh = tmp_path / "landing", tmp_path / "wh"
    land(seg, segments, seed=5)
    run_stream(seg, wh, max_segments=1, idle_exit_after=0, compact_every=None)  # one run per segment
    return seg, wh


def test_compaction_folds_runs_into_one_and_every_figure_stays(tmp_path):
    seg, wh_path = _streamed(tmp_path)
    wh = Warehouse(wh_path)
    before = _snapshot(wh_path)
    runs_before = len(wh.committed_runs())
    with wh.writer_lock():
        report = compact(wh)
    assert report.replaced == 6 and report.files_after < report.files_before
    assert len(wh.committed_runs()) == runs_before - 6 + 1
    assert _snapshot(wh_path) == before
    # the compacted run's manifest holds every input: nothing is processed again
    assert run_batch([seg], wh_path).inputs_new == 0
    assert run_stream(seg, wh_path, idle_exit_after=0).segments == 0


def test_later_duplicates_are_still_caught_by_the_compacted_dedup_index(tmp_path):
    seg, wh_path = _streamed(tmp_path)
    wh = Warehouse(wh_path)
    with wh.writer_lock():
        compact(wh)
    before = _snapshot(wh_path)
    # the same segments' bytes arrive again under new names (a re-sent file): same event ids
    again = tmp_path / "again"
    again.mkdir()
    for f in landing.list_segments(seg):
        (again / f.name.replace("seg-", "seg-9")).write_bytes(f.read_bytes())
    run_batch([again], wh_path)
    after = _snapshot(wh_path)
    assert after["select * from ledger_balance order by all"] == before["select * from ledger_balance order by all"]


def test_replaced_runs_are_deleted_only_after_the_grace_period(tmp_path):
    _seg, wh_path = _streamed(tmp_path, segments=3)
    wh = Warehouse(wh_path)
    before = _snapshot(wh_path)
    with wh.writer_lock():
        first = compact(wh)
        old_ids = [m["run_id"] for m in wh.committed_runs(include_replaced=True) if m["run_id"] in
                   next(m for m in wh.committed_runs() if m["run_id"] == first.run_id)["replaces"]]
        assert len(old_ids) == 3 and all((wh.manifests / f"{r}.json").exists() for r in old_ids)
        compact(wh, grace=dt.timedelta(minutes=10))  # too early: nothing deleted
        assert all((wh.manifests / f"{r}.json").exists() for r in old_ids)
        later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=11)
        report = compact(wh, grace=dt.timedelta(minutes=10), now=later)
    assert report.deleted_runs == 3
    assert not any((wh.manifests / f"{r}.json").exists() for r in old_ids)
    assert not any(wh.lake.glob(f"*/run={old_ids[0]}"))
    assert _snapshot(wh_path) == before


def test_a_compaction_that_dies_before_its_manifest_leaves_the_old_runs(tmp_path):
    _seg, wh_path = _streamed(tmp_path, segments=3)
    wh = Warehouse(wh_path)
    before = _snapshot(wh_path)
    # the parts of a compaction were written, the manifest was not
    some_part = next(f for f in wh.lake.glob("spans/run=*/*.parquet") if "__schema__" not in str(f))
    wh.write_part("spans", "cdeadbeef", "compacted", pq.read_table(some_part))
    assert _snapshot(wh_path) == before
    with wh.writer_lock():
        wh.discard_uncommitted()
    assert not (wh.lake / "spans" / "run=cdeadbeef").exists()


def test_nothing_to_compact_is_a_no_op_and_the_cli_says_so(tmp_path):
    seg, wh_path = tmp_path / "landing", tmp_path / "wh"
    land(seg, 2, seed=1)
    run_batch([seg], wh_path)  # one run
    res = CliRunner().invoke(main, ["compact", "--warehouse", str(wh_path)])
    assert res.exit_code == 0 and "nothing to compact" in res.output
    land(seg, 2, seed=2)
    run_batch([seg], wh_path)
    res = CliRunner().invoke(main, ["compact", "--warehouse", str(wh_path)])
    assert res.exit_code == 0 and "compacted 2 runs" in res.output


def test_the_stream_compacts_as_it_goes(tmp_path):
    seg, wh_path = tmp_path / "landing", tmp_path / "wh"
    land(seg, 6, seed=3)
    run_stream(seg, wh_path, max_segments=1, idle_exit_after=0, compact_every=3)
    runs = [m["run_id"] for m in Warehouse(wh_path).committed_runs() if m["run_id"] != "__schema__"]
    # after 3 micro-batches they became one run; after 6, that small run and the 3 new ones one again
    assert len(runs) == 1 and runs[0].startswith("c")
    run_batch([seg], tmp_path / "batch")
    assert figures(wh_path) == figures(tmp_path / "batch")
