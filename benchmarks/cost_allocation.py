"""Cost allocation throughput: 1M cost lines against driver aggregates that summarize 100M spans.

The driver aggregates are generated directly, as the pipeline's partials would hold them: one row
per (day, tenant, service) with request counts adding up to ``--spans``. The cost lines are a month
of hourly and daily lines: 40% tenant-tagged (direct), 50% split by requests (proportional over
every active tenant), 10% shared (spread by allocated cost). Conservation is checked on every line.

Baseline: the same largest-remainder split in plain Python integers (``split_exact``, the
reference the tests compare with), per line, on a sample of the proportional lines.

    .venv/bin/python benchmarks/cost_allocation.py [--lines 1000000] [--tenants 50] [--spans 100000000]
"""

from __future__ import annotations

import argparse
import resource
import datetime as dt
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tenantry.cost import allocate as A  # noqa: E402
from tenantry.cost.rules import parse_cost  # noqa: E402
from tenantry.schemas import ATTRS, QUANTITY  # noqa: E402
from tenantry.warehouse import Warehouse  # noqa: E402

START = dt.date(2026, 11, 1)


def driver_aggregates(days: int, tenants: int, services: int, spans: int, rng) -> pa.Table:
    n = days * tenants * services
    weights = rng.pareto(1.2, n) + 0.01  # a few big tenants, a long tail, like real fleets
    requests = np.floor(weights / weights.sum() * spans)
    requests[0] += spans - requests.sum()
    day = np.repeat(np.arange(days), tenants * services)
    tenant = np.tile(np.repeat(np.arange(tenants), services), days)
    return pa.table({
        "day": pa.array([START + dt.timedelta(days=int(d)) for d in range(days)], pa.date32()).take(pa.array(day)),
        "tenant_id": pa.array([f"tenant-{t:04d}" for t in range(tenants)]).take(pa.array(tenant)),
        "service_name": pa.array([f"svc-{s}" for s in range(services)]).take(pa.array(np.tile(np.arange(services), days * tenants))),
        "requests": requests,
    })


def cost_lines(n: int, days: int, tenants: int, rng) -> pa.Table:
    kind = rng.choice(3, size=n, p=[0.4, 0.5, 0.1])  # direct, proportional, shared
    day = rng.integers(0, days, n)
    hour = rng.integers(0, 24, n)
    start = (np.datetime64(START.isoformat()) + day.astype("timedelta64[D]")).astype("datetime64[us]") \
        + hour.astype("timedelta64[h]")
    services = np.array(["AmazonS3", "AmazonEC2", "AWSDataTransfer"])[kind]
    cents = rng.integers(1, 500_000_000, n)  # up to $0.5 with 9 decimals
    tag = np.where(kind == 0, rng.integers(0, tenants, n), -1)
    tag_arr = pa.array([f"tenant-{t:04d}" for t in range(tenants)]).take(pa.array(np.where(tag < 0, 0, tag)))
    tag_arr = pa.array(np.where(tag < 0, None, tag_arr.to_numpy(zero_copy_only=False)), pa.string())
    return pa.table({
        "line_id": pa.array([f"bench:{i}" for i in range(n)]),
        "charge_period_start": pa.array(start, pa.timestamp("us", tz="UTC")),
        "charge_period_end": pa.array(start + np.timedelta64(1, "h"), pa.timestamp("us", tz="UTC")),
        "day": pa.array(start.astype("datetime64[D]"), pa.date32()),
        "service": pa.array(services), "category": pa.array(np.where(kind == 2, "idle", "usage")),
        "resource_id": pa.nulls(n, pa.string()), "tenant_tag": tag_arr, "tags": pa.nulls(n, ATTRS),
        "amount": _nanos_to_decimal(cents),
        "currency": pa.array(["USD"] * n),
    })


def _nanos_to_decimal(nanos: np.ndarray) -> pa.Array:
    con = duckdb.connect()
    con.register("n", pa.table({"n": nanos}))
    return con.sql("select n::decimal(38, 0) * 0.000000001::decimal(38, 9) as a from n").to_arrow_table() \
        .column("a").cast(QUANTITY).combine_chunks()


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--tenants", type=int, default=50)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--services", type=int, default=20)
    ap.add_argument("--spans", type=int, default=100_000_000)
    ap.add_argument("--baseline-lines", type=int, default=2_000)
    ap.add_argument("--max-rows", type=int, default=A.DEFAULT_MAX_ROWS, help="allocation rows per chunk")
    ap.add_argument("--lake", default=None, help="also write each chunk as a part into this warehouse dir")
    args = ap.parse_args()
    rng = np.random.default_rng(7)

    aggs = driver_aggregates(args.days, args.tenants, args.services, args.spans, rng)
    lines = cost_lines(args.lines, args.days, args.tenants, rng)
    cfg = parse_cost({"shared_policy": "spread", "rules": [
        {"name": "tagged", "method": "direct"},
        {"name": "idle", "match": {"categories": ["idle"]}, "method": "shared"},
        {"name": "compute", "method": "proportional", "driver": "requests"},
    ]})
    print(f"driver aggregates: {aggs.num_rows:,} rows (day × tenant × service) summarizing "
          f"{int(sum(aggs.column('requests').to_pylist())):,} spans; cost lines: {lines.num_rows:,}; "
          f"tenants: {args.tenants}")

    t0 = time.perf_counter()
    con = duckdb.connect()
    con.register("aggs", aggs)
    drivers = con.sql("select day, tenant_id, 'requests' as driver_key, sum(requests)::decimal(38, 9) as quantity "
                      "from aggs group by all").to_arrow_table()
    t1 = time.perf_counter()
    rss0 = _peak_rss_mb()
    # stream: each chunk is checked and dropped (or written as a part), never all held at once
    stats = A.AllocationStats()
    sums = []
    wh = Warehouse.open(args.lake) if args.lake else None
    for k, chunk in enumerate(A.allocate_chunks(lines, cfg, drivers, cost_batch="bench", run_id="bench",
                                                max_rows=args.max_rows, stats=stats)):
        con.register("a", chunk.select(["line_id", "amount"]))
        sums.append(con.sql("select line_id, sum(amount) as got from a group by 1").to_arrow_table())
        con.unregister("a")
        if wh is not None:
            wh.write_part("cost_allocations", "bench", f"alloc-{k:05d}", chunk)
    t2 = time.perf_counter()
    result_rows = stats.rows
    con.register("l", lines.select(["line_id", "amount"]))
    con.register("s", pa.concat_tables(sums))
    bad = con.execute("select count(*) from (select line_id, sum(got) got from s group by 1) x "
                      "full join l using (line_id) where x.got is distinct from l.amount").fetchone()[0]
    covered = con.execute("select count(distinct line_id) from s").fetchone()[0]
    alloc_s = t2 - t1
    print(f"driver rollup: {t1 - t0:.2f}s; allocation: {alloc_s:.2f}s → {lines.num_rows / alloc_s:,.0f} lines/s, "
          f"{result_rows / alloc_s:,.0f} allocation rows/s ({result_rows:,} rows, max {args.max_rows:,} per chunk)")
    print(f"peak RSS: {rss0:,.0f} MB with the inputs → {_peak_rss_mb():,.0f} MB after allocating")
    print(f"conservation: {covered:,} of {lines.num_rows:,} lines present, {bad} lines off (must be 0)")
    print(f"by method: {stats.by_method}")

    # baseline: the same split in plain Python integers, per line, on a sample of proportional lines
    per_day = {}
    for r in drivers.to_pylist():
        per_day.setdefault(r["day"], []).append((r["tenant_id"], int(r["quantity"])))
    sample = [r for r in lines.slice(0, args.baseline_lines * 4).to_pylist()
              if r["tenant_tag"] is None and r["category"] == "usage"][: args.baseline_lines]
    t3 = time.perf_counter()
    py_rows = 0
    for r in sample:
        ws = per_day[r["day"]]
        py_rows += len(A.split_exact(r["amount"], [w for _, w in ws], [t for t, _ in ws]))
    py_s = time.perf_counter() - t3
    py_rate = len(sample) / py_s
    prop_lines = stats.by_method.get("proportional", 0) / max(args.tenants, 1)
    print(f"baseline (Python integers, per line, split only: no matching, no Arrow output): {py_rate:,.0f} "
          f"proportional lines/s = {py_rows / py_s:,.0f} shares/s over {args.tenants} tenants")
    print(f"ratio: vectorized allocation of all {lines.num_rows:,} lines (incl. ~{prop_lines:,.0f} proportional) "
          f"is {lines.num_rows / alloc_s / py_rate:.1f}x the baseline's per-line rate and "
          f"{result_rows / alloc_s / (py_rows / py_s):.1f}x its per-row (share) rate")
    if bad or covered != lines.num_rows:
        sys.exit("conservation FAILED")


if __name__ == "__main__":
    main()
