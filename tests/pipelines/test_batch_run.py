"""pipelines.batch.run_batch around the pipeline: views built meanwhile, and their errors."""

from __future__ import annotations

import threading

import pyarrow.parquet as pq
import pytest

from pipelines import batch
from tenantry import synthetic
from tenantry.warehouse import Warehouse, WarehouseError


def test_background_hands_over_the_error_at_wait_or_at_the_end():
    def boom():
        raise ValueError("views broke")

    with pytest.raises(ValueError, match="views broke"):
        with batch._Background(boom):
            pass  # nothing waited: leaving the block raises it
    with batch._Background(boom) as bg:
        with pytest.raises(ValueError, match="views broke"):
            bg.wait()
    with pytest.raises(KeyError):  # the block's own error is not masked by the thread's
        with batch._Background(boom):
            raise KeyError("block")
    ran = []
    with batch._Background(lambda: ran.append(threading.current_thread().name)) as bg:
        bg.wait()
    assert ran == ["tenantry-views"]


def test_views_are_built_before_the_commit_reads_them(tmp_path, monkeypatch):
    pq.write_table(synthetic.spans(2_000, tenants=3), tmp_path / "spans.parquet")
    order = []
    real_build, real_commit = Warehouse.build_views, batch.commit_run

    def build(self, *a, **k):
        out = real_build(self, *a, **k)
        order.append("views")
        return out

    def commit(*a, **k):
        order.append("commit")
        return real_commit(*a, **k)

    monkeypatch.setattr(Warehouse, "build_views", build)
    monkeypatch.setattr(batch, "commit_run", commit)
    report = batch.run_batch([tmp_path / "spans.parquet"], tmp_path / "wh")
    assert report.committed and report.rows["spans"] == 2_000
    assert order[:2] == ["views", "commit"]


def test_a_view_that_fails_to_build_fails_the_run_before_anything_is_committed(tmp_path, monkeypatch):
    pq.write_table(synthetic.spans(500, tenants=2), tmp_path / "spans.parquet")

    def broken(self, *a, **k):
        raise WarehouseError("building views failed at sql/x.sql: boom")

    monkeypatch.setattr(Warehouse, "build_views", broken)
    with pytest.raises(WarehouseError, match="boom"):
        batch.run_batch([tmp_path / "spans.parquet"], tmp_path / "wh")
    assert Warehouse(tmp_path / "wh").committed_inputs() == set()
