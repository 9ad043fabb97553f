"""Benchmark: every dashboard panel's query over a big warehouse (issue 9).

Generates hourly aggregates directly as lake parts of the partial tables (sre_hourly_partials,
latency_sketch_op_hourly, usage_events, usage_ledger, processor_stats, coverage_partials) for N tenants
over D days, builds the views and the mart cache (tenantry.dashboards.cache: materialized marts and
rollups), then times each panel of each dashboard, fleet and tenant scope, for each picker setting
(range/period), on the cache, and on the uncached views (the baseline: the same SQL, the views
recomputed from the partials; one run each, cut off after --baseline-timeout seconds). Prints per
panel p50 / p99 uncached and cached, the ratio and PASS/MISS against the issue's target (100 ms at
p99); the cache's build time, memory and the process's peak RSS while building; and a summary line.

    .venv/bin/python benchmarks/dashboards.py --tenants 10000 --days 90 --density 0.25

density 0.25: a quarter of the (tenant, hour) cells have traffic, i.e. 6 active hours a day per
tenant: most SaaS tenants are idle most hours, and every tenant is active most days.

``synthetic_warehouse`` is also what the dashboard tests use for small, hostile warehouses.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tenantry.warehouse import Warehouse  # noqa: E402

TARGET_P99_MS = 100.0


def _ts(values_us: np.ndarray) -> pa.Array:
    return pa.array(values_us, pa.timestamp("us", tz="UTC")).cast(pa.timestamp("ns", tz="UTC"))


def synthetic_warehouse(root: str | Path, tenants: list[str], *, days: int = 2, services=("api",),
                        meters=("api_calls",), density: float = 1.0, now: dt.datetime | None = None,
                        requests_of: dict[str, float] | None = None, seed: int = 7,
                        run_id: str = "synthetic") -> Warehouse:
    """A warehouse holding hourly aggregates for ``tenants`` over the last ``days`` days.

    ``density`` is the share of (tenant, hour, service) cells with traffic; ``requests_of`` pins a
    tenant's requests per active hour (tests scan pages for these figures). Names are used as
    given, so hostile service or meter names reach every view.
    """
    rng = np.random.default_rng(seed)
    now = (now or dt.datetime.now(dt.timezone.utc)).replace(minute=0, second=0, microsecond=0)
    wh = Warehouse.open(root)
    wh.build_views()
    hours = days * 24
    end_us = int(now.timestamp() * 1_000_000)
    hour_us = end_us - np.arange(hours, dtype=np.int64)[::-1] * 3_600_000_000
    t_idx, h_idx, s_idx = np.meshgrid(np.arange(len(tenants)), np.arange(hours), np.arange(len(services)),
                                      indexing="ij")
    t_idx, h_idx, s_idx = t_idx.ravel(), h_idx.ravel(), s_idx.ravel()
    if density < 1.0:
        keep = rng.random(t_idx.size) < density
        t_idx, h_idx, s_idx = t_idx[keep], h_idx[keep], s_idx[keep]
    n = t_idx.size
    tenant_arr = pa.array(tenants, pa.string()).take(pa.array(t_idx))
    service_arr = pa.array(list(services), pa.string()).take(pa.array(s_idx))
    requests = rng.integers(1, 500, n).astype(np.float64)
    if requests_of:
        for t, r in requests_of.items():
            requests[t_idx == tenants.index(t)] = r
    errors = np.floor(requests * rng.random(n) * 0.05)
    batch = pa.array([run_id] * n, pa.string())
    hours_arr = _ts(hour_us[h_idx])
    wh.write_part("sre_hourly_partials", run_id, "part-0", pa.table({
        "hour": hours_arr, "tenant_id": tenant_arr, "service_name": service_arr, "requests": requests,
        "errors": errors, "duration_sum_ms": requests * 40.0, "ingest_batch": batch}))
    # three sketch buckets per cell (fast, typical, slow) carrying all the requests; the slow bucket's
    # share and key vary, so p95 and p99 differ between tenants and hours (ranks must be decided)
    k = 3
    slow = rng.uniform(0.0, 0.1, n)
    keys = np.concatenate([np.full(n, 320), np.full(n, 360), rng.integers(380, 460, n)]).astype(np.int32)
    counts = np.concatenate([requests * 0.85, requests * (0.15 - slow), requests * slow])
    # written per operation, as the pipeline writes them (the views sum operations per service): two
    # operations a cell, each with half of every bucket (halving is exact, so the sums are too)
    ops = ("GET /items", "POST /checkout")
    wh.write_part("latency_sketch_op_hourly", run_id, "part-0", pa.table({
        "hour": pa.concat_arrays([hours_arr] * k * 2), "tenant_id": pa.concat_arrays([tenant_arr] * k * 2),
        "service_name": pa.concat_arrays([service_arr] * k * 2),
        "operation": pa.array(np.repeat(np.array(ops, dtype=object), k * n), pa.string()),
        "key": np.concatenate([keys, keys]), "count": np.concatenate([counts * 0.5, counts - counts * 0.5]),
        "ingest_batch": pa.concat_arrays([batch] * k * 2)}))
    # one usage event per tenant per day per meter (usage_events feeds tenant_usage_daily)
    day_us = end_us - np.arange(days, dtype=np.int64)[::-1] * 86_400_000_000
    ut, ud, um = (a.ravel() for a in np.meshgrid(np.arange(len(tenants)), np.arange(days), np.arange(len(meters)),
                                                indexing="ij"))
    m = ut.size
    qty = pa.array([Decimal(int(q)) for q in rng.integers(1, 10_000, m)], pa.decimal128(38, 9))
    wh.write_part("usage_events", run_id, "part-0", pa.table({
        "event_id": pa.array([f"ev-{i}" for i in range(m)]), "tenant_id": pa.array(tenants).take(pa.array(ut)),
        "meter": pa.array(list(meters)).take(pa.array(um)), "quantity": qty, "unit": pa.array(["calls"] * m),
        "time": _ts(day_us[ud]), "dimensions": pa.array([[]] * m, pa.map_(pa.string(), pa.string())),
        "source": pa.array(["app"] * m), "service_name": pa.array([services[0]] * m),
        "trace_id": pa.nulls(m, pa.string()), "span_id": pa.nulls(m, pa.string()),
        "ingest_batch": pa.array([run_id] * m)}))
    # the same usage as daily ledger entries (tenant_usage_daily and ledger_balance read the ledger)
    ledger_tenants = pa.array(tenants).take(pa.array(ut))
    ledger_meters = pa.array(list(meters)).take(pa.array(um))
    wh.write_part("usage_ledger", run_id, "part-0", pa.table({
        "entry_id": pa.array([f"le-{i}" for i in range(m)]), "tenant_id": ledger_tenants, "meter": ledger_meters,
        "period_start": _ts(day_us[ud] - day_us[ud] % 86_400_000_000),
        "period_end": _ts(day_us[ud] - day_us[ud] % 86_400_000_000 + 86_400_000_000),
        "dimensions": pa.array([[]] * m, pa.map_(pa.string(), pa.string())), "dimensions_key": pa.array(["{}"] * m),
        "quantity": qty, "unit": pa.array(["calls"] * m), "event_count": pa.array([1] * m, pa.int64()),
        "revision": pa.array([1] * m, pa.int32()), "kind": pa.array(["usage"] * m),
        "supersedes": pa.nulls(m, pa.string()), "computed_at": _ts(np.full(m, end_us)),
        "pipeline_version": pa.array(["synthetic"] * m), "ingest_batch": pa.array([run_id] * m)}))
    nt = len(tenants)
    wh.write_part("processor_stats", run_id, "part-0", pa.table({
        "table": pa.array(["spans"] * nt), "tenant_id": pa.array(tenants),
        "processor": pa.array(["redact"] * nt), "outcome": pa.array(["redacted:email"] * nt),
        "count": pa.array(rng.integers(1, 50, nt)), "ingest_batch": pa.array([run_id] * nt)}))
    days_arr = pa.array([(now - dt.timedelta(days=i)).date() for i in range(days)], pa.date32())
    wh.write_part("coverage_partials", run_id, "part-0", pa.table({
        "day": days_arr, "signal": pa.array(["spans"] * days), "total": pa.array([1000] * days, pa.int64()),
        "unattributed": pa.array([25] * days, pa.int64()), "ingest_batch": pa.array([run_id] * days)}))
    wh.commit(run_id, [f"input:{run_id}"])
    return wh


def time_panels(con, repeats: int, sel, tenant: str | None = None, timeout_s: float | None = None) -> list:
    """[(dashboard, panel title, [ms per run], status)] for every panel visible in this scope."""
    from tenantry.dashboards import load_definitions
    from tenantry.dashboards.build import visible_panels
    from tenantry.dashboards.model import analyze_sql
    from tenantry.dashboards.query import relations, run_panel

    out = []
    available = relations(con)
    for name, d in load_definitions().items():
        if (tenant is None and d.tenant_only) or (tenant is not None and not d.per_tenant):
            continue
        for p in visible_panels(d, tenant):
            refs = analyze_sql(p.sql)
            times, status = [], ""
            for _ in range(repeats):
                timer = threading.Timer(timeout_s, con.interrupt) if timeout_s else None
                if timer:
                    timer.start()
                t0 = time.perf_counter()
                data = run_panel(con, p, refs, sel.params(), available)
                ms = (time.perf_counter() - t0) * 1000
                if timer:
                    timer.cancel()
                status = "timeout" if timeout_s and ms >= timeout_s * 1000 * 0.99 else data.status
                times.append(ms)
                if status in ("missing", "timeout"):
                    break
            out.append((name, p.title, times, status))
    return out


def _pct(times: list[float]) -> tuple[float, float]:
    return statistics.median(times), float(np.percentile(times, 99))


def compare(title: str, base: list | None, cached: list, results: list) -> None:
    """Print one table: per panel uncached and cached p50 / p99, ratio, PASS/MISS."""
    print(f"\n{title}")
    print(f"  {'dashboard':9} {'panel':44} {'uncached p50/p99 ms':>21} {'cached p50/p99 ms':>19} {'ratio':>8}  target")
    base_by = {(n, t): (ts, s) for n, t, ts, s in base or []}
    for name, ptitle, ct, cs in cached:
        if cs == "missing":
            print(f"  {name:9} {ptitle[:44]:44} {'(view not in this warehouse)':>21}")
            continue
        c50, c99 = _pct(ct)
        bt, bs = base_by.get((name, ptitle), ([], ""))
        if not bt:
            b, ratio = f"{'-':>21}", f"{'':>8}"
        elif bs == "timeout":
            b, ratio = f"{'>' + format(bt[0] / 1000, '.0f') + ' s':>21}", f"{'>' + format(bt[0] / c99, '.0f') + 'x':>8}"
        else:
            b50, b99 = _pct(bt)
            b, ratio = f"{b50:10.1f} {b99:10.1f}", f"{b99 / c99:7.0f}x"
        verdict = "PASS" if c99 < TARGET_P99_MS else "MISS"
        results.append((title, name, ptitle, c99, verdict))
        print(f"  {name:9} {ptitle[:44]:44} {b} {c50:9.1f} {c99:9.1f} {ratio}  {verdict} [{cs}]")


def _peak_rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def _reset_peak_rss() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM: the peak from here on is the cache build's
    except OSError:
        pass


def main(argv=None) -> int:
    from tenantry.dashboards import Selection, load_definitions
    from tenantry.dashboards.build import views_read, visible_panels
    from tenantry.dashboards.cache import build_snapshot, marts_read
    from tenantry.dashboards.query import connect

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tenants", type=int, default=10_000)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--density", type=float, default=0.25, help="share of tenant-hours with traffic")
    ap.add_argument("--services", type=int, default=1, help="services per tenant")
    ap.add_argument("--repeats", type=int, default=25, help="runs per panel on the cache")
    ap.add_argument("--picks", default="90d/day,7d/day,24h/hour",
                    help="picker settings to time, range/period, comma-separated")
    ap.add_argument("--baseline-picks", default="90d/day",
                    help="picker settings to also time on the uncached views ('' for none)")
    ap.add_argument("--baseline-timeout", type=float, default=30.0,
                    help="seconds an uncached panel may run before it is cut off")
    args = ap.parse_args(argv)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="dash-bench-") as tmp:
        t0 = time.perf_counter()
        tenants = [f"tenant-{i:05d}" for i in range(args.tenants)]
        services = tuple(f"svc-{i}" for i in range(args.services))
        synthetic_warehouse(tmp, tenants, days=args.days, density=args.density, services=services)
        print(f"generated {args.tenants:,} tenants x {args.days} days x 24 h x {args.services} service(s), "
              f"density {args.density} (share of tenant-hours with traffic) in {time.perf_counter() - t0:.1f}s")
        defs = load_definitions()
        _reset_peak_rss()
        rss0 = _peak_rss_mib()
        snap = build_snapshot(tmp, marts_read(defs) | {"tenant_sre_rollup"})
        build_peak = _peak_rss_mib()
        print(f"cache: {len(snap.columns)} marts, {snap.rows:,} rows, built in {snap.build_s:.1f}s; "
              f"DuckDB holds {snap.memory_bytes() / 2**20:,.0f} MiB; process peak RSS while building "
              f"{build_peak:,.0f} MiB (from {rss0:,.0f} MiB)")
        tenant = tenants[len(tenants) // 2]
        tviews = views_read(p for d in defs.values() if d.per_tenant for p in visible_panels(d, tenant))
        copy_ms = []
        for _ in range(max(args.repeats, 5)):
            t1 = time.perf_counter()
            snap.tenant_connection(tenant, tviews).close()
            copy_ms.append((time.perf_counter() - t1) * 1000)
        t1 = time.perf_counter()
        connect(tmp, tenant).close()
        base_copy = (time.perf_counter() - t1) * 1000
        print(f"tenant page set-up (a private copy of {tenant}'s rows, once per page): cached p50 "
              f"{_pct(copy_ms)[0]:.1f} ms, p99 {_pct(copy_ms)[1]:.1f} ms; uncached (copy from the views) {base_copy:,.0f} ms")
        results: list = []
        base_picks = set(filter(None, args.baseline_picks.split(",")))
        for pick in args.picks.split(","):
            sel = Selection(*pick.split("/"))
            base = None
            if pick in base_picks:
                con = connect(tmp)
                try:
                    base = time_panels(con, 1, sel, timeout_s=args.baseline_timeout)
                finally:
                    con.close()
            con = snap.fleet_connection()
            try:
                cached = time_panels(con, args.repeats, sel)
            finally:
                con.close()
            compare(f"fleet scope, range {sel.range}, period {sel.period}", base, cached, results)
            tcon = snap.tenant_connection(tenant, tviews)
            try:
                tcached = time_panels(tcon, args.repeats, sel, tenant)
            finally:
                tcon.close()
            compare(f"tenant scope ({tenant}), range {sel.range}, period {sel.period}", None, tcached, results)
    worst = max(results, key=lambda r: r[3])
    missed = [r for r in results if r[4] == "MISS"]
    print(f"\nsummary: {len(results) - len(missed)}/{len(results)} panel timings PASS (cached p99 < "
          f"{TARGET_P99_MS:.0f} ms); worst {worst[3]:.1f} ms = {worst[3] / TARGET_P99_MS:.2f}x the target "
          f"({worst[1]}: {worst[2]}, {worst[0]}); load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the start, "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end")
    for r in missed:
        print(f"  MISS {r[0]}: {r[1]}: {r[2]} p99 {r[3]:.1f} ms")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
