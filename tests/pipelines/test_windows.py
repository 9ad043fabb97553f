"""Event-time windows over the aggregate families: TestStream tests of windowing, triggers and late
data, and the promise that panes add up to the batch figures however the data is split."""

from __future__ import annotations

import datetime as dt

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_stream import TestStream as BeamTestStream
from apache_beam.testing.util import assert_that
from apache_beam.transforms.window import TimestampedValue

from pipelines.transforms.coverage import COVERAGE, coverage_partial
from pipelines.transforms.partials import as_part, merge
from pipelines.transforms.security import EVENTS
from pipelines.transforms.sre import FAMILIES, RED_MINUTELY, SRE_HOURLY, sre_partials
from pipelines.transforms.windows import WINDOWED, EventTimeWindows, FamilyWindows, WindowSettings, window_starts
from tenantry import schemas, synthetic

T0 = 1_700_000_040  # a minute boundary (epoch seconds)


def red(minute_s: int, requests: float, tenant: str = "acme", service: str = "api") -> pa.Table:
    """A one-row red_minutely partial."""
    cols = {
        "minute": pa.array([minute_s * 10**9], schemas.TS),
        "tenant_id": [tenant], "service_name": [service], "operation": ["GET /x"],
    }
    for s in RED_MINUTELY.sums:
        cols[s] = pa.array([requests if s == "requests" else 0.0], pa.float64())
    return pa.table(cols)


def _streaming_pipeline():
    opts = PipelineOptions()
    opts.view_as(StandardOptions).streaming = True
    return beam.Pipeline(runner=BundleBasedDirectRunner(), options=opts)


def _panes_of(output) -> list[tuple[str, str, float]]:
    """(family, pane timing, requests) per pane, sorted."""
    return sorted((name, part.rsplit("-", 1)[1], pc.sum(t["requests"]).as_py()) for name, part, t in output)


def _expect(expected):
    def check(actual):
        got = _panes_of(actual)
        assert got == sorted(expected), f"panes {got} != {sorted(expected)}"
    return check


def test_early_on_time_and_late_panes_each_carry_only_their_delta():
    settings = WindowSettings(early=dt.timedelta(seconds=5), allowed_lateness=dt.timedelta(minutes=10))
    stream = (
        BeamTestStream()
        .advance_watermark_to(T0)
        .add_elements([TimestampedValue((RED_MINUTELY.table, "b1", red(T0, 1)), T0)])
        .advance_processing_time(6)  # the early pane fires with what has arrived so far
        .add_elements([TimestampedValue((RED_MINUTELY.table, "b2", red(T0, 2)), T0 + 1)])
        .advance_watermark_to(T0 + 60)  # the window ends: on-time pane
        .add_elements([TimestampedValue((RED_MINUTELY.table, "b3", red(T0, 4)), T0 + 61)])  # late, accepted
        .advance_watermark_to(T0 + 60 + 11 * 60)  # past the allowed lateness
        .add_elements([TimestampedValue((RED_MINUTELY.table, "b4", red(T0, 8)), T0 + 800)])  # too late
        .advance_watermark_to_infinity()
    )
    with _streaming_pipeline() as p:
        out = p | stream | EventTimeWindows(settings)
        assert_that(out["panes"], _expect([(RED_MINUTELY.table, "early", 1.0), (RED_MINUTELY.table, "on_time", 2.0),
                                           (RED_MINUTELY.table, "late", 4.0)]))


def test_each_family_gets_its_own_window_size():
    # two minutes of red partials are two windows; the same two minutes of an hourly family are one
    hourly = {
        "hour": pa.array([T0 // 3600 * 3600 * 10**9] * 2, schemas.TS), "tenant_id": ["a", "a"],
        "service_name": ["api", "api"], "requests": [1.0, 2.0], "errors": [0.0, 0.0], "duration_sum_ms": [1.0, 1.0],
    }
    stream = (
        BeamTestStream()
        .advance_watermark_to(T0 - 3600)
        .add_elements([TimestampedValue((RED_MINUTELY.table, "b1", pa.concat_tables([red(T0, 1), red(T0 + 60, 2)])), T0),
                       TimestampedValue((SRE_HOURLY.table, "b1", pa.table(hourly)), T0)])
        .advance_watermark_to_infinity()
    )
    with _streaming_pipeline() as p:
        out = p | stream | EventTimeWindows(WindowSettings(early=None))
        assert_that(out["panes"], _expect([(RED_MINUTELY.table, "on_time", 1.0), (RED_MINUTELY.table, "on_time", 2.0),
                                           (SRE_HOURLY.table, "on_time", 3.0)]))


def test_late_data_for_an_old_window_does_not_reopen_newer_ones():
    stream = (
        BeamTestStream()
        .advance_watermark_to(T0)
        .add_elements([TimestampedValue((RED_MINUTELY.table, "b1", red(T0, 1)), T0),
                       TimestampedValue((RED_MINUTELY.table, "b1", red(T0 + 60, 10)), T0 + 60)])
        .advance_watermark_to(T0 + 180)
        .add_elements([TimestampedValue((RED_MINUTELY.table, "b2", red(T0, 100)), T0 + 181)])
        .advance_watermark_to_infinity()
    )
    with _streaming_pipeline() as p:
        out = p | stream | EventTimeWindows(WindowSettings(early=None))
        assert_that(out["panes"], _expect([(RED_MINUTELY.table, "on_time", 1.0), (RED_MINUTELY.table, "on_time", 10.0),
                                           (RED_MINUTELY.table, "late", 100.0)]))


def test_pane_names_are_deterministic_per_window_and_pane():
    stream = (BeamTestStream().advance_watermark_to(T0)
              .add_elements([TimestampedValue((RED_MINUTELY.table, "b1", red(T0, 1)), T0)])
              .advance_watermark_to_infinity())
    with _streaming_pipeline() as p:
        out = p | stream | EventTimeWindows(WindowSettings(early=None))
        assert_that(out["panes"] | beam.Map(lambda c: c[1]), lambda parts: parts == [f"w{T0}-p0-on_time"] or
                    pytest.fail(f"unexpected pane names {parts}"))


def test_evidence_rows_pass_through_unwindowed():
    events = pa.table({"x": [1, 2]})
    with beam.Pipeline(runner=FnApiRunner()) as p:
        out = p | beam.Create([(EVENTS, "b1", events)]) | EventTimeWindows()
        assert_that(out["passthrough"] | beam.Map(lambda c: (c[0], c[2].num_rows)),
                    lambda got: got == [(EVENTS, 2)] or pytest.fail(str(got)))


def test_window_starts_read_timestamp_and_date_keys():
    assert list(window_starts(red(T0, 1), RED_MINUTELY)) == [T0]
    cov = pa.table({"day": pa.array([19000], pa.date32()), "signal": ["spans"], "total": [1], "unattributed": [0]})
    assert list(window_starts(cov, COVERAGE)) == [19000 * 86400]


def test_family_windows_assign_by_family():
    from apache_beam.transforms.window import WindowFn
    from apache_beam.utils.timestamp import Timestamp

    wf = FamilyWindows({n: size for n, (_f, size) in WINDOWED.items()})
    ctx = WindowFn.AssignContext(Timestamp(T0 + 30), element=(RED_MINUTELY.table, None))
    (w,) = wf.assign(ctx)
    assert (w.start, w.end) == (Timestamp(T0), Timestamp(T0 + 60))
    ctx = WindowFn.AssignContext(Timestamp(T0 + 30), element=(COVERAGE.table, None))
    (w,) = wf.assign(ctx)
    assert w.end - w.start == 86400 and w.start.micros % (86400 * 10**6) == 0


def _assert_same(got: pa.Table, want: pa.Table, family) -> None:
    """Same keys, same sums (float sums may differ in the last bits with the order of addition)."""
    assert got.num_rows == want.num_rows, family.table
    for k in family.keys:
        assert got[k].equals(want[k]), (family.table, k)
    for c in family.sums:
        np.testing.assert_allclose(got[c].to_numpy(), want[c].to_numpy(), rtol=1e-12, err_msg=f"{family.table}.{c}")


@pytest.mark.parametrize("batches", [1, 3, 7])
def test_panes_add_up_to_the_batch_figures_however_the_data_is_split(batches):
    spans = synthetic.spans(4000, tenants=7, seed=batches, hours=3)
    expected = {name: table for name, table in sre_partials(spans).items()}
    cov_expected = coverage_partial("spans", spans)
    slices = np.array_split(np.arange(spans.num_rows), batches)
    chunks = []
    for i, idx in enumerate(slices):
        part = spans.take(pa.array(idx))
        chunks += [as_part(name, f"b{i}", t) for name, t in sre_partials(part).items()]
        chunks.append(as_part(COVERAGE.table, f"b{i}", coverage_partial("spans", part)))

    def check(panes):
        by_family: dict[str, list] = {}
        for name, _part, table in panes:
            by_family.setdefault(name, []).append(table)
        for family in FAMILIES:
            got = merge(family, by_family[family.table]).sort_by([(k, "ascending") for k in family.keys])
            want = merge(family, [expected[family.table]]).sort_by([(k, "ascending") for k in family.keys])
            _assert_same(got, want, family)
        got = merge(COVERAGE, by_family[COVERAGE.table]).sort_by("day")
        _assert_same(got, merge(COVERAGE, [cov_expected]).sort_by("day"), COVERAGE)
        # one pane per family and window in a bounded run
        for name, tables in by_family.items():
            assert len(tables) == len({int(s) for t in tables for s in window_starts(t, WINDOWED[name][0])})

    with beam.Pipeline(runner=FnApiRunner()) as p:
        out = p | beam.Create(chunks) | EventTimeWindows()
        assert_that(out["panes"], check)
