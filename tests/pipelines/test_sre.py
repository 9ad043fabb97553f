"""SRE partials: weighting, sketch accuracy, hour→day merge, and the Beam composite."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to

from pipelines.transforms.partials import merge
from pipelines.transforms.partials import MergeFamilies
from pipelines.transforms.sre import FAMILIES, LATENCY_OP_HOURLY, MERGERS, RED_MINUTELY, SrePartials, sre_partials
from tenantry import schemas, sketch, synthetic
from tests.sql.test_sre_views import T0_NS, make_spans

HOUR_NS = 3600 * 10**9


def _rows(n, **kw):
    base = {"tenant": "a", "service": "api", "name": "GET /x", "duration_ms": 10.0}
    return [{**base, "start_ns": T0_NS + i * 10**9, **kw} for i in range(n)]


def test_only_server_and_consumer_spans_are_requests():
    spans = make_spans(_rows(3) + _rows(2, kind="internal") + _rows(1, kind="consumer") + _rows(1, kind="client"))
    assert pc.sum(sre_partials(spans)[RED_MINUTELY.table]["requests"]).as_py() == 4


def test_counts_are_reweighted_by_sample_weight():
    spans = make_spans(_rows(4, weight=10.0, status="error") + _rows(6, weight=10.0))
    red = sre_partials(spans)[RED_MINUTELY.table]
    assert pc.sum(red["requests"]).as_py() == 100 and pc.sum(red["errors"]).as_py() == 40
    assert pc.sum(sre_partials(spans)[LATENCY_OP_HOURLY.table]["count"]).as_py() == 100


def test_latency_ladder_counts_requests_over_each_threshold():
    spans = make_spans(_rows(3, duration_ms=60.0) + _rows(2, duration_ms=300.0) + _rows(1, duration_ms=50.0))
    red = sre_partials(spans)[RED_MINUTELY.table]
    assert pc.sum(red["slow_over_50ms"]).as_py() == 5  # strictly slower than the threshold
    assert pc.sum(red["slow_over_250ms"]).as_py() == 2
    assert pc.sum(red["slow_over_500ms"]).as_py() == 0


def test_no_requests_gives_no_partials():
    assert sre_partials(make_spans(_rows(3, kind="internal"))) == {}
    assert sre_partials(schemas.empty("spans")) == {}


def test_null_and_zero_durations_land_in_the_zero_bucket():
    spans = make_spans(_rows(2, duration_ms=0.0)).set_column(
        schemas.SPANS.get_field_index("duration_ms"), "duration_ms", pa.array([None, 0.0], pa.float64()))
    lat = sre_partials(spans)[LATENCY_OP_HOURLY.table]
    assert lat["key"].to_pylist() == [sketch.ZERO_KEY]


def test_unicode_and_sql_looking_names_are_kept_verbatim():
    name = "GET /ünï/'; drop table x;--"
    red = sre_partials(make_spans(_rows(2, name=name, tenant="t'x")))[RED_MINUTELY.table]
    assert red["operation"].to_pylist() == [name] and red["tenant_id"].to_pylist() == ["t'x"]


def test_sketch_quantiles_match_exact_within_relative_accuracy():
    durations = np.random.default_rng(1).lognormal(3.0, 1.2, 20_000)
    spans = make_spans([{"tenant": "a", "service": "s", "name": "op", "start_ns": T0_NS, "duration_ms": float(d)}
                        for d in durations])
    lat = sre_partials(spans)[LATENCY_OP_HOURLY.table]
    for q in (0.5, 0.9, 0.95, 0.99):
        exact = np.quantile(durations, q, method="lower")
        got = sketch.quantile(lat["key"].to_numpy(), lat["count"].to_numpy(), q)
        assert abs(got - exact) <= sketch.RELATIVE_ACCURACY * exact


def test_merged_hourly_sketches_equal_the_day_sketch():
    spans = synthetic.spans(20_000, tenants=3, start_ns=T0_NS, hours=24)
    by_hour = [spans.filter(pc.equal(pc.floor_temporal(spans["start_time"], unit="hour"),
                                     pa.scalar(T0_NS + h * HOUR_NS, schemas.TS))) for h in range(24)]
    fam = LATENCY_OP_HOURLY
    merged = merge(fam, [sre_partials(b)[fam.table] for b in by_hour if b.num_rows])
    direct = sre_partials(spans)[fam.table]
    key = ["tenant_id", "service_name", "operation", "key"]
    day_m = merged.group_by(key).aggregate([("count", "sum")]).sort_by([(k, "ascending") for k in key])
    day_d = direct.group_by(key).aggregate([("count", "sum")]).sort_by([(k, "ascending") for k in key])
    assert day_m.equals(day_d)
    a = day_m.filter(pc.equal(day_m["tenant_id"], "t00000"))
    assert sketch.quantile(a["key"].to_numpy(), a["count_sum"].to_numpy(), 0.99) is not None


def test_batches_split_anywhere_merge_to_the_same_partials():
    spans = synthetic.spans(5_000, tenants=4, start_ns=T0_NS, hours=3)
    for fam in FAMILIES:
        whole = merge(fam, [sre_partials(spans)[fam.table]])
        halves = merge(fam, [sre_partials(spans.slice(0, 1234))[fam.table], sre_partials(spans.slice(1234))[fam.table]])
        order = [(k, "ascending") for k in fam.keys]
        whole, halves = whole.sort_by(order), halves.sort_by(order)
        assert whole.select(list(fam.keys)).equals(halves.select(list(fam.keys))), fam.table
        for c in fam.sums:  # float sums differ only in the order of additions
            np.testing.assert_allclose(whole[c].to_numpy(), halves[c].to_numpy(), rtol=1e-12, err_msg=c)


def test_beam_composite_outputs_one_merged_table_per_family():
    spans = make_spans(_rows(5) + _rows(3, tenant="b"))
    with beam.Pipeline(runner=FnApiRunner()) as p:
        out = (p | beam.Create([("spans", "p0", spans.slice(0, 4)), ("spans", "p1", spans.slice(4)),
                                ("logs", "p2", schemas.empty("logs"))])
               | SrePartials() | MergeFamilies(MERGERS))
        merged = {f.table: out | f"Only{f.table}" >> beam.Filter(lambda kv, n=f.table: kv[0] == n)
                  | f"Table{f.table}" >> beam.Map(lambda kv: kv[1]) for f in FAMILIES}
        totals = merged[RED_MINUTELY.table] | "Sum" >> beam.Map(lambda t: (t.num_rows, pc.sum(t["requests"]).as_py()))
        assert_that(totals, equal_to([(2, 8.0)]))
        hourly = merged["sre_hourly_partials"] | "SumH" >> beam.Map(lambda t: sorted(t["tenant_id"].to_pylist()))
        assert_that(hourly, equal_to([["a", "b"]]), label="Hourly")


def test_grouping_is_the_same_by_bincount_and_by_sort():
    from pipelines.transforms.partials import distinct

    codes = np.random.default_rng(3).integers(0, 5_000, 20_000)
    dense = distinct(codes, 5_000)  # a small value range: bincount
    by_sort = np.unique(codes, return_inverse=True)
    assert np.array_equal(dense[0], by_sort[0]) and np.array_equal(dense[1], by_sort[1])
    sparse = distinct(codes * 10**9, 5_000 * 10**9)  # a huge range: sort
    assert np.array_equal(sparse[0], by_sort[0] * 10**9) and np.array_equal(sparse[1], by_sort[1])


def test_hourly_sre_groups_include_every_hour_with_requests_and_no_other():
    spans = make_spans(_rows(2) + _rows(3, kind="internal", start_ns=T0_NS + HOUR_NS)
                       + _rows(1, kind="internal", tenant="c"))
    hourly = sre_partials(spans)["sre_hourly_partials"]
    assert hourly["tenant_id"].to_pylist() == ["a"] and hourly["requests"].to_pylist() == [2.0]
