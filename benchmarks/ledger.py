"""Ledger throughput: usage events/s through dedup + aggregation, next to plain DuckDB.

    .venv/bin/python benchmarks/ledger.py [--events 10000000] [--tenants 10000] [--dup-rate 0.05]

Input (one Parquet file, read by both): N usage events (5% of them re-deliveries of another event: same id, same content) over
T tenants, 3 meters (one grouped by a dimension), times spread over 3 days, quantities exact
decimals. Measured, both from the same file with the same number of DuckDB threads:

- tenantry: ``tenantry.ledger.compute.compute`` — classify (range, strict, quantity checks),
  deduplicate by (tenant, event_id) within the run and against an (empty) committed index,
  canonical dimension keys, period assignment, aggregation into ledger entries, the per-event
  index rows (written as Parquet parts, as the run writes them), quarantine and counts;
- baseline: DuckDB ``SELECT DISTINCT`` over the events + ``GROUP BY`` tenant, meter, day,
  dimensions with sum and count: the least any exact dedup + aggregation can do.

Each side runs ``--repeat`` times (alternating); prints best and median of both rates, the ratios
(targets: >= 1M events/s on 2 cores; within 3x of DuckDB), CPU-time ratios, load average and peak RSS.
"""

from __future__ import annotations

import argparse
import datetime as dt
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
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tenantry import schemas
from tenantry.config import parse
from tenantry.ledger.compute import compute, meters_table
from tenantry.ledger.run import INDEX_CHUNK_ROWS, PART_PREFIX, _chunks
from tenantry.ledger.settings import settings
from tenantry.warehouse import Warehouse

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


def run_tenantry(path: str, threads: int, wh: Warehouse) -> tuple[float, dict]:
    con = duckdb.connect(config={"threads": threads})
    con.execute(f"create temp view new_events as select * from {_source(path)}")
    con.register("meters", meters_table(CFG.meters))
    con.register("hist_ledger", schemas.USAGE_LEDGER.empty_table())
    con.register("hist_index", schemas.USAGE_DEDUP.empty_table())
    started, cpu = time.perf_counter(), time.process_time()
    result = compute(con, settings(CFG), NOW, "bench", "bench")
    # the index as update_for_run writes it: streamed to Arrow, re-sliced, one Parquet part per chunk
    reader = con.sql("select * from accepted_index").to_arrow_reader(INDEX_CHUNK_ROWS)
    parts = [wh.write_part("usage_dedup", "bench", f"{PART_PREFIX}-index-{i:05d}", chunk)
             for i, chunk in enumerate(_chunks(reader, INDEX_CHUNK_ROWS))]
    seconds = time.perf_counter() - started
    cpu_s = time.process_time() - cpu
    index_rows = sum(pq.ParquetFile(p).metadata.num_rows for p in parts)
    con.close()
    return seconds, {"cpu_s": cpu_s, **result.counts, "entries": result.entries.num_rows, "index_rows": index_rows}


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
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    t = time.perf_counter()
    events = make_events(args.events, args.tenants, args.dup_rate)
    base, ours = [], []
    with tempfile.TemporaryDirectory() as tmp:
        # both read the same Parquet file, as update_for_run reads a run's usage_events parts
        path = str(Path(tmp) / "usage_events.parquet")
        pq.write_table(events, path, compression="zstd", compression_level=1)
        print(f"generated {events.num_rows:,} events over {args.tenants:,} tenants in "
              f"{time.perf_counter() - t:.1f}s; loadavg {_loadavg()}")
        wh = Warehouse.open(Path(tmp) / "wh")
        for _ in range(args.repeat):
            base.append(run_duckdb(path, args.threads))
            ours.append(run_tenantry(path, args.threads, wh))
    counts = ours[-1][1]
    n = events.num_rows
    print(f"tenantry ledger : accepted {counts['accepted']:,}, duplicates {counts['duplicates_in_run']:,}, "
          f"entries {counts['entries']:,}, index rows {counts['index_rows']:,}")
    print(f"duckdb baseline : {base[-1][1]:,} groups")
    for label, pick in (("best", min), ("median", statistics.median)):
        o_s, b_s = pick(s for s, _ in ours), pick(s for s, _, _ in base)
        o_cpu, b_cpu = pick(c["cpu_s"] for _, c in ours), pick(c for _, _, c in base)
        print(f"{label:6s} wall    : tenantry {o_s:6.2f}s {n / o_s:12,.0f} ev/s | duckdb {b_s:6.2f}s "
              f"{n / b_s:12,.0f} ev/s | ratio {o_s / b_s:.2f}x (target <= 3x; >= 1M ev/s on {args.threads} threads)")
        print(f"{label:6s} CPU     : tenantry {o_cpu:6.2f}s | duckdb {b_cpu:6.2f}s | ratio {o_cpu / b_cpu:.2f}x "
              f"(less sensitive to other load on the machine)")
    print(f"loadavg after   : {_loadavg()}")
    print(f"peak RSS        : {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"

if __name__ == "__main__":
    main()
