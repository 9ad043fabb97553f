"""Ledger throughput: usage events/s through dedup + aggregation, next to plain DuckDB.

    .venv/bin/python benchmarks/ledger.py [--events 10000000] [--tenants 10000] [--dup-rate 0.05] [--history]

Input (one Parquet file, read by both): N usage events (5% of them re-deliveries of another event: same id, same content) over
T tenants, 3 meters (one grouped by a dimension), times spread over 3 days, quantities exact
decimals. Measured, both from the same file with the same number of DuckDB threads, each run in
its own process (so each reports its own peak RSS):

- tenantry: ``tenantry.ledger.run.write_ledger``, exactly what a pipeline run does — classify
  (range, strict, quantity checks), deduplicate by (tenant, event_id) within the run and against
  the committed index (empty, or with ``--history`` the index of an earlier run of as many other
  events), canonical dimension keys, period assignment, aggregation into ledger entries, the
  per-event index rows written as Parquet parts, quarantine and counts;
- baseline: DuckDB ``SELECT DISTINCT`` over the events + ``GROUP BY`` tenant, meter, day,
  dimensions with sum and count: the least any exact dedup + aggregation can do.

Each side runs ``--repeat`` times (alternating); prints best and median of both rates, the ratios
and PASS/MISS against the targets (>= 1M events/s on 2 cores; within 3x of DuckDB), CPU time
(events per CPU-second: what other load on the shared machine distorts least), load average and
peak RSS.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import resource
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute  # pa.compute
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tenantry import schemas
from tenantry.config import parse
from tenantry.ledger.compute import meters_table
from tenantry.ledger.run import history_views, write_ledger
from tenantry.ledger.settings import settings
from tenantry.warehouse import Warehouse

NOW = dt.datetime(2026, 3, 4, tzinfo=dt.timezone.utc)
CFG = parse({"meters": [{"name": "api.calls"}, {"name": "tokens", "group_by": ["region"]},
                        {"name": "storage.gb", "aggregation": "max"}]})


def _flat(arr):
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def make_events(n: int, tenants: int, dup_rate: float, seed: int = 7, id_prefix: str = "") -> pa.Table:
    rng = np.random.default_rng(seed)
    n_unique = round(n / (1 + dup_rate))
    uniq = np.arange(n_unique)
    idx = np.concatenate([uniq, rng.integers(0, n_unique, n - n_unique)])  # re-deliveries
    rng.shuffle(idx)
    tenant = idx % tenants  # a pure function of the event, so a re-delivery is an exact copy
    meter = (idx // tenants) % 3
    start = int(NOW.timestamp() * 1e9) - 3 * 86_400 * 10**9
    times = start + (idx * 7_919_993 % (3 * 86_400 * 10**6)) * 1000
    millis = (idx * 31 % 100_000).astype(np.int64)
    # exact decimals with 3 places: integer thousandths times 0.001
    quantity = pa.compute.multiply(pa.array(millis).cast(pa.decimal128(19, 0)),
                                   pa.scalar(Decimal("0.001"), pa.decimal128(4, 3))).cast(schemas.QUANTITY)
    region_keys = _flat(pa.array(["region"] * n))
    region_vals = _flat(pa.array(np.where(idx % 2 == 0, "eu", "us")))
    dims = pa.MapArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32)), region_keys, region_vals)
    return schemas.conform("usage_events", pa.table({
        "event_id": pa.compute.binary_join_element_wise(id_prefix, pa.array(idx).cast(pa.string()), ""),
        "tenant_id": pa.compute.binary_join_element_wise("t", pa.array(tenant).cast(pa.string()), ""),
        "meter": pa.array(np.array(["api.calls", "tokens", "storage.gb"])[meter]),
        "quantity": quantity, "unit": pa.nulls(n, pa.string()),
        "time": pa.array(times, pa.int64()).cast(schemas.TS), "dimensions": dims,
        "source": pa.array(["app"] * n), "service_name": pa.array(["svc"] * n),
        "ingest_batch": pa.array(["bench"] * n),
    }))


TARGET_EVENTS_S = 1_000_000
TARGET_RATIO = 3.0


def _source(path: str) -> str:
    return f"read_parquet('{path}')"


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _connect(threads: int) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(config={"threads": threads})
    con.execute("set enable_progress_bar = false")
    return con


def _ledger_connection(path: str, threads: int, wh: Warehouse, run_id: str) -> duckdb.DuckDBPyConnection:
    # the relations update_for_run prepares: the run's events, the meters, the committed history
    con = _connect(threads)
    con.execute(f"create temp view new_events as select * from {_source(path)}")
    con.register("meters", meters_table(CFG.meters))
    history_views(con, wh, run_id)
    return con


def run_tenantry(path: str, threads: int, wh_dir: str, history_path: str | None = None) -> dict:
    """One ledger run over the file, as update_for_run does it (minus listing the run's files);
    with ``history_path``, after a committed run over those other events (not timed)."""
    wh = Warehouse.open(Path(wh_dir))
    wh.init()
    if history_path:
        con = _ledger_connection(history_path, threads, wh, "history")
        write_ledger(con, wh, "history", settings(CFG), NOW - dt.timedelta(hours=1), "bench")
        con.close()
        wh.commit("history", ["history"])
    con = _ledger_connection(path, threads, wh, "bench")
    started, cpu = time.perf_counter(), time.process_time()
    report = write_ledger(con, wh, "bench", settings(CFG), NOW, "bench")
    seconds, cpu_s = time.perf_counter() - started, time.process_time() - cpu
    con.close()
    parts = sorted((wh.lake / "usage_dedup" / "run=bench").glob("*.parquet"))
    return {"seconds": seconds, "cpu_s": cpu_s, "rss_mib": _peak_rss_mib(), "accepted": report.accepted,
            "duplicates": report.duplicates, "entries": report.entries_written,
            "index_rows": sum(pq.ParquetFile(p).metadata.num_rows for p in parts), "index_parts": len(parts)}


def run_duckdb(path: str, threads: int) -> dict:
    con = _connect(threads)
    con.execute(f"create temp view events as select * from {_source(path)}")
    started, cpu = time.perf_counter(), time.process_time()
    rows = con.sql("""
        select tenant_id, meter, date_trunc('day', time) as day, dimensions, sum(quantity), count(*)
        from (select distinct tenant_id, event_id, meter, quantity, time, dimensions from events)
        group by all
    """).to_arrow_table().num_rows
    seconds, cpu_s = time.perf_counter() - started, time.process_time() - cpu
    con.close()
    return {"seconds": seconds, "cpu_s": cpu_s, "rss_mib": _peak_rss_mib(), "groups": rows}


def _in_child(pool, fn, *args) -> dict:
    # each measurement in a fresh process: its peak RSS is its own, and no run warms the next
    return pool.apply(fn, args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--tenants", type=int, default=10_000)
    ap.add_argument("--dup-rate", type=float, default=0.05)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--history", action="store_true",
                    help="measure the run against a committed index of an earlier run of as many other events "
                         "(the lookups a steady-state run pays; the DuckDB baseline is unchanged)")
    args = ap.parse_args()
    t = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    base, ours = [], []
    with tempfile.TemporaryDirectory() as tmp:
        # both read the same Parquet file, as update_for_run reads a run's usage_events parts
        path = str(Path(tmp) / "usage_events.parquet")
        events = make_events(args.events, args.tenants, args.dup_rate)
        n = events.num_rows
        pq.write_table(events, path, compression="zstd", compression_level=1)
        del events
        history = None
        if args.history:
            history = str(Path(tmp) / "history.parquet")
            pq.write_table(make_events(args.events, args.tenants, args.dup_rate, seed=8, id_prefix="h"), history,
                           compression="zstd", compression_level=1)
        print(f"generated {n:,} events over {args.tenants:,} tenants in {time.perf_counter() - t:.1f}s; "
              f"loadavg {_loadavg()}")
        for i in range(args.repeat):
            with ctx.Pool(1, maxtasksperchild=1) as pool:
                base.append(_in_child(pool, run_duckdb, path, args.threads))
            with ctx.Pool(1, maxtasksperchild=1) as pool:
                ours.append(_in_child(pool, run_tenantry, path, args.threads, str(Path(tmp) / f"wh{i}"), history))
    last = ours[-1]
    print(f"tenantry ledger : accepted {last['accepted']:,}, duplicates {last['duplicates']:,}, "
          f"entries {last['entries']:,}, index rows {last['index_rows']:,} in {last['index_parts']} parts")
    if history:
        print(f"                  measured against a committed index of {args.events:,} other events (--history)")
    print(f"duckdb baseline : {base[-1]['groups']:,} groups")
    for label, pick in (("best", min), ("median", statistics.median)):
        o_s, b_s = pick(r["seconds"] for r in ours), pick(r["seconds"] for r in base)
        o_cpu, b_cpu = pick(r["cpu_s"] for r in ours), pick(r["cpu_s"] for r in base)
        rate, ratio = n / o_s, o_s / b_s
        print(f"{label:6s} wall    : tenantry {o_s:6.2f}s {rate:12,.0f} ev/s | duckdb {b_s:6.2f}s "
              f"{n / b_s:12,.0f} ev/s | ratio {ratio:.2f}x")
        print(f"{label:6s} targets : >= {TARGET_EVENTS_S:,} ev/s on {args.threads} threads "
              f"{'PASS' if rate >= TARGET_EVENTS_S else 'MISS'} | within {TARGET_RATIO:g}x of duckdb "
              f"{'PASS' if ratio <= TARGET_RATIO else 'MISS'}")
        print(f"{label:6s} CPU     : tenantry {o_cpu:6.2f}s {n / o_cpu:12,.0f} ev/CPU-s | duckdb {b_cpu:6.2f}s "
              f"{n / b_cpu:12,.0f} ev/CPU-s | ratio {o_cpu / b_cpu:.2f}x")
    print(f"peak RSS        : tenantry {max(r['rss_mib'] for r in ours):,.0f} MiB | "
          f"duckdb {max(r['rss_mib'] for r in base):,.0f} MiB (each run in its own process)")
    print(f"loadavg after   : {_loadavg()}")


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


if __name__ == "__main__":
    main()
