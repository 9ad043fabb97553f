"""Synthetic normalized telemetry, generated columnar with numpy (for benchmarks and tests).

Deterministic for a seed: the same call gives the same rows, so figures are comparable.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa

from tenantry import schemas

SERVICES = ("api", "billing", "search", "auth")
ROUTES = ("/api/items", "/api/orders", "/api/search", "/login", "/api/export")


def spans(n: int, tenants: int = 20, seed: int = 0, start_ns: int | None = None,
          hours: int = 24, ingest_batch: str = "synthetic") -> pa.Table:
    """``n`` spans from ``start_ns`` (default: yesterday 00:00 UTC) over ``tenants`` tenants and ``hours`` hours: 70% server spans, ~2% errors,
    log-normal durations; tenant t{i} has tier gold/silver/bronze by i mod 3."""
    if start_ns is None:  # yesterday 00:00 UTC: recent enough for every validation window
        day = 86_400 * 10**9
        start_ns = (time.time_ns() // day - 1) * day
    rng = np.random.default_rng(seed)
    tenant_idx = rng.zipf(1.3, n) % tenants
    tenant_names = np.array([f"t{i:05d}" for i in range(tenants)], dtype=object)
    tiers = np.array(["gold", "silver", "bronze"], dtype=object)
    start = start_ns + rng.integers(0, hours * 3600 * 10**9, n, dtype=np.int64)
    dur_ns = (rng.lognormal(mean=3.0, sigma=0.8, size=n) * 1e6).astype(np.int64)
    kinds = np.where(rng.random(n) < 0.7, "server", "internal").astype(object)
    status = np.where(rng.random(n) < 0.02, "error", "unset").astype(object)
    svc = np.array(SERVICES, dtype=object)[rng.integers(0, len(SERVICES), n)]
    route = np.array(ROUTES, dtype=object)[rng.integers(0, len(ROUTES), n)]
    ids = rng.integers(0, 2**63 - 1, size=(n, 3), dtype=np.int64)
    trace_id = pa.array(np.char.mod("%032x", ids[:, 0].astype(np.uint64)).astype(object))
    span_id = pa.array(np.char.mod("%016x", ids[:, 1].astype(np.uint64)).astype(object))
    # attributes map: two entries per span, built from flat arrays + offsets (no dict per span)
    keys = np.empty(2 * n, dtype=object)
    keys[0::2] = "http.route"
    keys[1::2] = "http.response.status_code"
    vals = np.empty(2 * n, dtype=object)
    vals[0::2] = route
    vals[1::2] = np.where(status == "error", "500", "200")
    attrs = pa.MapArray.from_arrays(pa.array(np.arange(0, 2 * n + 1, 2, dtype=np.int32)), pa.array(keys), pa.array(vals))
    tenant = tenant_names[tenant_idx]
    data = {
        "tenant_id": pa.array(tenant),
        "tenant_tier": pa.array(tiers[tenant_idx % 3]),
        "service_name": pa.array(svc),
        "trace_id": trace_id,
        "span_id": span_id,
        "name": pa.array(route),
        "kind": pa.array(kinds),
        "status_code": pa.array(status),
        "start_time": pa.array(start, schemas.TS),
        "end_time": pa.array(start + dur_ns, schemas.TS),
        "duration_ms": pa.array(dur_ns / 1e6),
        "attributes": attrs,
        "sample_weight": pa.array(np.ones(n)),
        "ingest_batch": pa.repeat(pa.scalar(ingest_batch), n),
    }
    return schemas.conform("spans", pa.table(data))
