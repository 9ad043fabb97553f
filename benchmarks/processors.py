"""Benchmark: the full demo processor chain against just reading the same spans from Parquet.

Generates N spans (default 1,000,000) as Arrow, with realistic attributes (HTTP method, route,
status, a URL with ids, user ids, about 1% e-mail addresses, a few card numbers and bearer
tokens) across 20 tenants in three tiers; writes them to a Parquet file in a temporary directory;
then measures

- baseline: reading the file back batch by batch (``pq.ParquetFile.iter_batches``, 65,536 rows);
- chain: the demo chain (attribute_tenant, validate, redact, limit_cardinality, sample) over the
  same batches, already in memory.

Read and chain alternate ``--repeat`` times (the machine may be shared: both stages see the same
load). It prints best and median seconds of both, rows per second, the ratio chain / read
(best/best and the median of the paired ratios; target: <= 2.0), the load average, each
processor's time inside one chain run and alone, and the peak RSS.

    .venv/bin/python benchmarks/processors.py [--rows 1000000] [--batch-rows 65536]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector_processors import build_chain  # noqa: E402
from tenantry import schemas  # noqa: E402
from tenantry.config import parse  # noqa: E402

TIERS = ["free", "pro", "enterprise"]
TENANTS = {f"tenant-{i:02d}": {"tier": TIERS[i % 3], "plan": None} for i in range(20)}

DEMO_CONFIG = {
    "tenants": TENANTS,
    "processors": [
        {"attribute_tenant": {"policy": "quarantine"}},
        "validate",
        {"redact": {"mode": "mask", "blocked_keys": ["http.request.header.authorization"]}},
        {"limit_cardinality": {"max_values": 1000, "window": "1h"}},
        {"sample": {"tiers": {"free": 10, "pro": 50, "enterprise": 100}, "slow_ms": 1000}},
    ],
}

ROUTES = ["/api/orders", "/api/orders/{id}", "/api/users/{id}", "/api/search", "/health", "/api/invoices/{id}"]
METHODS = ["GET", "POST", "PUT", "DELETE"]


def _strings(values: np.ndarray) -> pa.Array:
    return pa.array(values.astype(object), pa.string())


def generate(n: int, seed: int = 7) -> pa.Table:
    """``n`` spans with ~8 attributes each; vectorized (numpy), so generating 1M takes seconds."""
    rng = np.random.default_rng(seed)
    tenant_ids = np.array(sorted(TENANTS))
    tenant = tenant_ids[rng.integers(0, 20, n)]
    n_traces = max(1, n // 5)
    trace_pool = np.array([f"{x:032x}" for x in rng.integers(0, 2**62, n_traces, dtype=np.int64) * 7919 + 12345])
    trace = trace_pool[rng.integers(0, n_traces, n)]
    span = np.char.mod("%016x", rng.integers(0, 2**62, n, dtype=np.int64))
    now_ns = int(datetime.now(timezone.utc).timestamp() * 1e9)
    start = now_ns - rng.integers(0, 3600 * 10**9, n)
    dur_ms = rng.lognormal(3.0, 1.2, n)
    end = start + (dur_ms * 1e6).astype(np.int64)
    status = np.where(rng.random(n) < 0.02, "error", "ok")
    route = np.array(ROUTES)[rng.integers(0, len(ROUTES), n)]
    user = np.char.add("u-", rng.integers(0, 5000, n).astype(str))
    url = np.char.add(np.char.add("https://api.example.com", route), np.char.add("?page=", rng.integers(0, 400, n).astype(str)))
    code = np.where(status == "error", "500", "200")
    method = np.array(METHODS)[rng.integers(0, 4, n)]
    email = np.where(rng.random(n) < 0.01, np.char.add(user, "@customer-mail.com"), "")
    secret = np.where(rng.random(n) < 0.002, "Bearer abcDEF123.ghiJKL456", "")
    card = np.where(rng.random(n) < 0.001, "4111 1111 1111 1111", "")

    cols = [
        ("tenant.id", tenant), ("http.request.method", method), ("http.route", route),
        ("http.response.status_code", code), ("url.full", url), ("user.id", user),
        ("enduser.email", email), ("http.request.header.authorization", secret), ("payment.note", card),
    ]
    present = [np.ones(n, bool) if k not in ("enduser.email", "http.request.header.authorization", "payment.note") else v != "" for k, v in cols]
    counts = np.sum(present, axis=0)
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(counts, out=offsets[1:])
    keys = np.empty(offsets[-1], object)
    vals = np.empty(offsets[-1], object)
    pos = offsets[:-1].copy()
    for (k, v), p in zip(cols, present):
        keys[pos[p]] = k
        vals[pos[p]] = v[p]
        pos[p] += 1
    attrs = pa.MapArray.from_arrays(pa.array(offsets), pa.array(keys, pa.string()), pa.array(vals, pa.string()), type=schemas.ATTRS)
    svc = np.array(["checkout", "search", "billing", "users"])[rng.integers(0, 4, n)]
    r_off = np.arange(0, 2 * n + 1, 2, dtype=np.int32)
    r_keys = np.tile(np.array(["service.name", "deployment.environment"], object), n)
    r_vals = np.empty(2 * n, object)
    r_vals[0::2] = svc
    r_vals[1::2] = "prod"
    res = pa.MapArray.from_arrays(pa.array(r_off), pa.array(r_keys, pa.string()), pa.array(r_vals, pa.string()), type=schemas.ATTRS)
    return schemas.conform("spans", pa.table({
        "tenant_id": _strings(tenant), "service_name": _strings(svc), "trace_id": _strings(trace),
        "span_id": _strings(span), "name": _strings(np.char.add(method, np.char.add(" ", route))),
        "kind": pa.array(["server"] * n), "status_code": _strings(status),
        "start_time": pa.array(start, pa.timestamp("ns", tz="UTC")),
        "end_time": pa.array(end, pa.timestamp("ns", tz="UTC")), "duration_ms": pa.array(dur_ms),
        "attributes": attrs, "resource_attributes": res, "sample_weight": pa.array(np.ones(n)),
        "ingest_batch": pa.array(["bench"] * n),
    }))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _load() -> float:
    return os.getloadavg()[0]


def _timed(fn, name: str, into: dict):
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            into[name] = into.get(name, 0.0) + time.perf_counter() - t0
    return wrapper


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--batch-rows", type=int, default=65536)
    ap.add_argument("--repeat", type=int, default=5, help="runs of read + chain; best and median are reported")
    ap.add_argument("--write-to", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.write_to:  # child process: generate and write, so the parent's RSS is read + chain only
        pq.write_table(generate(args.rows), args.write_to, row_group_size=args.batch_rows)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "spans.parquet")
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, __file__, "--rows", str(args.rows), "--batch-rows", str(args.batch_rows), "--write-to", path],
            check=True,
        )
        gen_s = time.perf_counter() - t0
        size_mb = os.path.getsize(path) / 2**20

        # read and chain alternate, so both see the same load on a shared machine; the ratio of
        # each pair is reported as well as best and median of each stage
        reads, chains, ratios, loads, cpu_reads, cpu_chains = [], [], [], [], [], []
        for _ in range(args.repeat):
            loads.append(_load())
            t0, c0 = time.perf_counter(), time.process_time()
            batches = [pa.Table.from_batches([b]) for b in pq.ParquetFile(path).iter_batches(batch_size=args.batch_rows)]
            reads.append(time.perf_counter() - t0)
            cpu_reads.append(time.process_time() - c0)
            if len(reads) == 1:
                rss_after_read = _rss_mb()  # after the first read
            chain = build_chain(parse(DEMO_CONFIG))  # a fresh chain: limit_cardinality's state starts empty
            kept = quarantined = sampled_out = 0
            t0, c0 = time.perf_counter(), time.process_time()
            for b in batches:
                res = chain.process("spans", b)
                kept += res.kept.num_rows
                quarantined += res.quarantined.num_rows
                sampled_out += res.sampled_out
            chains.append(time.perf_counter() - t0)
            cpu_chains.append(time.process_time() - c0)
            ratios.append(chains[-1] / reads[-1])
        loads.append(_load())
    rss_peak = _rss_mb()

    # where the chain's time goes: each processor timed inside one chain run (the rest is the
    # chain's own overhead), then each processor alone on the previous one's output
    inside: dict[str, float] = {}
    chain = build_chain(parse(DEMO_CONFIG))
    for p in chain:
        p.process = _timed(p.process, p.name, inside)
    t0 = time.perf_counter()
    for b in batches:
        chain.process("spans", b)
    inside_total = time.perf_counter() - t0
    alone: dict[str, float] = {}
    chain2 = build_chain(parse(DEMO_CONFIG))
    for b in batches:
        for p in chain2:
            t1 = time.perf_counter()
            b = p.process("spans", b).kept
            alone[p.name] = alone.get(p.name, 0.0) + time.perf_counter() - t1

    n = args.rows
    assert kept + quarantined + sampled_out == n, "accounting invariant broken"
    med = statistics.median
    print(f"spans: {n:,} in {len(batches)} batches of {args.batch_rows:,}; parquet {size_mb:.0f} MiB; "
          f"generated in {gen_s:.1f}s; {args.repeat} repeats (read and chain alternate)")
    print(f"load average (1 min) during the repeats: {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores")
    print(f"{'stage':<34}{'best s':>9}{'median s':>10}{'best rows/s':>14}")
    print(f"{'read parquet (baseline)':<34}{min(reads):>9.3f}{med(reads):>10.3f}{n / min(reads):>14,.0f}")
    print(f"{'processor chain (5 processors)':<34}{min(chains):>9.3f}{med(chains):>10.3f}{n / min(chains):>14,.0f}")
    print(f"ratio chain / read: best/best {min(chains) / min(reads):.2f}x, median of paired ratios "
          f"{med(ratios):.2f}x (target <= 2.0x)")
    print(f"CPU seconds (all threads): read best {min(cpu_reads):.3f} median {med(cpu_reads):.3f}; chain best "
          f"{min(cpu_chains):.3f} median {med(cpu_chains):.3f}; ratio of bests {min(cpu_chains) / min(cpu_reads):.2f}x")
    print(f"\none chain run, {inside_total:.3f}s: each processor inside it / alone on the previous one's output")
    for name, s in inside.items():
        print(f"  {name:<32}{s:>9.3f}{alone[name]:>10.3f}")
    print(f"  {'chain overhead':<32}{inside_total - sum(inside.values()):>9.3f}")
    print(f"kept {kept:,}  quarantined {quarantined:,}  sampled_out {sampled_out:,}")
    print(f"peak RSS (this process): {rss_after_read:,.0f} MiB after reading, {rss_peak:,.0f} MiB after the chain")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
