"""Ledger throughput: usage events/s through dedup + aggregation, next to plain DuckDB.

    .venv/bin/python benchmarks/ledger.py [--events 10000000] [--tenants 10000] [--dup-rate 0.05]

Input (one Parquet file, read by both): N usage events (5% of them re-deliveries of another event: same id, same content) over
T tenants, 3 meters (one grouped by a dimension), times spread over 3 days, quantities exact
decimals. Measured, both from the same file with the same number of DuckDB threads:

- tenantry: ``tenantry.ledger.compute.compute`` — classify (range, strict, quantity checks),
  deduplicate by (tenant, event_id) within the run and against an (empty) committed index,
  canonical dimension keys, period assignment, aggregation into ledger entries, the per-event
  index rows (materialized as Arrow, as the run writes them), quarantine and counts;
- baseline: DuckDB ``SELECT DISTINCT`` over the events + ``GROUP BY`` tenant, meter, day,
  dimensions with sum and count: the least any exact dedup + aggregation can do.

Prints both rates, the ratio (targets: >= 1M events/s on 2 cores; within 3x of DuckDB) and peak RSS.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tenantry import schemas
from tenantry.config import parse
from tenantry.ledger.compute import compute, meters_table
from tenantry.ledger.settings import settings

NOW = dt.datetime(2026, 3, 4, tzinfo=dt.timezone.utc)
CFG = parse({"meters": [{"name": "api.calls"}, {"name": "tokens", "group_by": ["region"]},
                        {"name": "storage.gb", "aggregation": "max"}]})


def _flat(arr):
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def make_events(n: int, tenants: int, dup_rate: float, seed: int = 7) -> pa.Table:
    rng = np.random.default_rng(seed)
    n_unique = int(round(n / (1 + dup_rate)))
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
        "event_id": pa.array(idx).cast(pa.string()),
        "tenant_id": pa.compute.binary_join_element_wise("t", pa.array(tenant).cast(pa.string()), ""),
        "meter": pa.array(np.array(["api.calls", "tokens", "storage.gb"])[meter]),
        "quantity": quantity, "unit": pa.nulls(n, pa.string()),
        "time": pa.array(times, pa.int64()).cast(schemas.TS), "dimensions": dims,
        "source": pa.array(["app"] * n), "service_name": pa.array(["svc"] * n),
        "ingest_batch": pa.array(["bench"] * n),
    }))


def _source(path: str) -> str:
    return f"read_parquet('{path}')"


def run_tenantry(path: str, threads: int) -> tuple[float, dict]:
    con = duckdb.connect(config={"threads": threads})
    con.execute(f"create temp view new_events as select * from {_source(path)}")
    con.register("meters", meters_table(CFG.meters))
    con.register("hist_ledger", schemas.USAGE_LEDGER.empty_table())
    con.register("hist_index", schemas.USAGE_DEDUP.empty_table())
    started, cpu = time.perf_counter(), time.process_time()
    result = compute(con, settings(CFG), NOW, "bench", "bench")
    index_rows = con.sql("select * from accepted_index").to_arrow_table().num_rows
    seconds = time.perf_counter() - started
    con.close()
    return seconds, {"cpu_s": time.process_time() - cpu,**result.counts, "entries": result.entries.num_rows, "index_rows": index_rows}


def run_duckdb(path: str, threads: int) -> tuple[float, int, float]:
    con = duckdb.connect(config={"threads": threads})
    con.execute(f"create temp view events as select * from {_source(path)}")
    started, cpu = time.perf_counter(), time.process_time()
    rows = con.sql("""
        select tenant_id, meter, date_trunc('day', time) as day, dimensions, sum(quantity), count(*)
        from (select distinct tenant_id, event_id, meter, quantity, time, dimensions from events)
        group by all
    """).to_arrow_table().num_rows
    seconds = time.perf_counter() - started
    con.close()
    return seconds, rows, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--tenants", type=int, default=10_000)
    ap.add_argument("--dup-rate", type=float, default=0.05)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    t = time.perf_counter()
    events = make_events(args.events, args.tenants, args.dup_rate)
    with tempfile.TemporaryDirectory() as tmp:
        # both read the same Parquet file, as update_for_run reads a run's usage_events parts
        path = str(Path(tmp) / "usage_events.parquet")
        pq.write_table(events, path, compression="zstd", compression_level=1)
        print(f"generated {events.num_rows:,} events over {args.tenants:,} tenants in "
              f"{time.perf_counter() - t:.1f}s")
        base_s, base_rows, base_cpu = run_duckdb(path, args.threads)
        ours_s, counts = run_tenantry(path, args.threads)
    ours_rate, base_rate = events.num_rows / ours_s, events.num_rows / base_s
    print(f"tenantry ledger : {ours_s:7.2f}s  {ours_rate:13,.0f} events/s  "
          f"(accepted {counts['accepted']:,}, duplicates {counts['duplicates_in_run']:,}, "
          f"entries {counts['entries']:,}, index rows {counts['index_rows']:,}); CPU {counts['cpu_s']:.1f}s")
    print(f"duckdb baseline : {base_s:7.2f}s  {base_rate:13,.0f} events/s  ({base_rows:,} groups); CPU {base_cpu:.1f}s")
    print(f"ratio           : tenantry takes {ours_s / base_s:.2f}x DuckDB's time (target <= 3x); "
          f"{ours_rate / 1e6:.2f}M events/s on {args.threads} threads (target >= 1M)")
    print(f"CPU-time ratio  : {counts['cpu_s'] / base_cpu:.2f}x (less sensitive to other load on the machine)")
    print(f"peak RSS        : {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")


if __name__ == "__main__":
    main()
