"""SRE and security views over a warehouse with a generated workload whose answers are known.

Planted: `slowco` latency regression (hours 28-29 on api), `intruder` brute-force burst of 401s +
one cross-tenant access + one tenant mismatch (hour 28), `noisy` floods the shared `search`
service (hour 28) while the others' latency there triples. `quiet` is the control: nothing fires.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from pipelines.transforms.security import security_partials
from pipelines.transforms.sre import sre_partials
from tenantry import config, querying, schemas, sketch, slo
from tenantry.security import SecuritySettings
from tenantry.warehouse import Warehouse

T0 = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
T0_NS = int(T0.timestamp()) * 10**9
HOUR_NS = 3600 * 10**9
HOURS = 30
CFG = config.parse({
    "tenants": {"quiet": {"tier": "gold", "plan": "enterprise"}, "slowco": {"tier": "gold", "plan": "enterprise"},
                "intruder": {"tier": "silver"}, "noisy": {"tier": "silver"}},
    "plans": {"enterprise": {"sla": {"availability": 99.9, "credit_percent": 10}}},
    "slos": {"default": {"availability": 99.9, "latency": {"threshold_ms": 250, "objective": 99.0}}},
})


def make_spans(rows: list[dict], batch: str = "b1") -> pa.Table:
    """Spans from dicts with tenant, service, name, start_ns, duration_ms and optional status,
    attrs, kind, trace_id, weight."""
    n = len(rows)
    start = np.array([r["start_ns"] for r in rows], dtype=np.int64)
    dur = np.array([r["duration_ms"] for r in rows], dtype=np.float64)
    attrs = [list((r.get("attrs") or {}).items()) for r in rows]
    return schemas.conform("spans", pa.table({
        "tenant_id": [r["tenant"] for r in rows],
        "service_name": [r["service"] for r in rows],
        "trace_id": [r.get("trace_id") or f"{i:032x}" for i, r in enumerate(rows)],
        "span_id": [f"{i:016x}" for i in range(n)],
        "name": [r["name"] for r in rows],
        "kind": [r.get("kind", "server") for r in rows],
        "status_code": [r.get("status", "unset") for r in rows],
        "start_time": pa.array(start, schemas.TS),
        "end_time": pa.array(start + (dur * 1e6).astype(np.int64), schemas.TS),
        "duration_ms": dur,
        "attributes": pa.array(attrs, schemas.ATTRS),
        "sample_weight": [r.get("weight", 1.0) for r in rows],
        "ingest_batch": [batch] * n,
    }))


def planted_rows(seed: int = 7) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []

    def add(tenant, service, name, hour, count, ms, **extra):
        offs = rng.integers(0, HOUR_NS, count)
        for i, o in enumerate(offs):
            rows.append({"tenant": tenant, "service": service, "name": name, "start_ns": T0_NS + hour * HOUR_NS + int(o),
                         "duration_ms": float(ms * rng.uniform(0.9, 1.1)),
                         "attrs": {"http.response.status_code": "200"}, **extra})

    for h in range(HOURS):
        for t in ("quiet", "slowco", "intruder"):
            add(t, "api", "GET /api/items", h, 60, 400.0 if (t == "slowco" and h in (28, 29)) else 20.0)
            add(t, "search", "GET /api/search", h, 10, 60.0 if h == 28 else 20.0)
        add("noisy", "search", "GET /api/search", h, 2000 if h == 28 else 10, 20.0)
    # brute force: 300 failed logins in hour 28
    for i in range(300):
        rows.append({"tenant": "intruder", "service": "auth", "name": "POST /login",
                     "start_ns": T0_NS + 28 * HOUR_NS + i * 10**9, "duration_ms": 5.0,
                     "attrs": {"http.response.status_code": "401"}, "trace_id": f"bf{i:030x}"})
    rows.append({"tenant": "intruder", "service": "api", "name": "GET /api/documents/{id}",
                 "start_ns": T0_NS + 28 * HOUR_NS + 5, "duration_ms": 4.0, "trace_id": "c" * 32,
                 "attrs": {"http.response.status_code": "200", "tenant.resource_owner": "quiet"}})
    rows.append({"tenant": "intruder", "service": "api", "name": "GET /api/items", "kind": "internal",
                 "start_ns": T0_NS + 28 * HOUR_NS + 9, "duration_ms": 4.0, "trace_id": "d" * 32,
                 "attrs": {"tenant.baggage_id": "quiet"}})
    return rows


def build_warehouse(root, spans: pa.Table, cfg=CFG, run_id: str = "r1") -> Warehouse:
    wh = Warehouse.open(root)
    for name, part in sre_partials(spans).items():
        wh.write_part(name, run_id, f"{name}-0", part.append_column("ingest_batch", pa.repeat(pa.scalar(run_id), part.num_rows)))
    counts, events = security_partials(spans, SecuritySettings())
    for name, part in (("security_hourly_partials", counts), ("security_events", events)):
        if part is not None:
            wh.write_part(name, run_id, f"{name}-0", part.append_column("ingest_batch", pa.repeat(pa.scalar(run_id), part.num_rows)))
    wh.write_part("slo_targets", run_id, "slo-targets", slo.targets_table(cfg, T0, run_id))
    wh.commit(run_id, [f"in-{run_id}"])
    wh.build_views()
    return wh


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("wh")
    build_warehouse(root, make_spans(planted_rows()))
    return str(root)


def q(wh, sql):
    return querying.run(wh, sql).rows


def test_sre_hourly_keeps_its_columns(planted):
    cols = querying.run(planted, "select * from tenant_sre_hourly limit 1").columns
    for c in ("hour", "tenant_id", "service_name", "requests", "errors", "error_rate", "p50_ms", "p95_ms", "p99_ms"):
        assert c in cols


def test_red_minutely_counts_every_request(planted):
    (total,) = q(planted, "select sum(requests) from tenant_red_minutely where tenant_id = 'quiet'")[0:1][0]
    assert total == HOURS * 70


def test_red_daily_quantiles_match_exact_within_sketch_accuracy(tmp_path):
    rng = np.random.default_rng(3)
    durations = rng.lognormal(3.0, 1.0, 5000)
    rows = [{"tenant": "a", "service": "api", "name": "op", "start_ns": T0_NS + int(i) * 17 * 10**9,
             "duration_ms": float(d)} for i, d in enumerate(durations)]
    build_warehouse(tmp_path, make_spans(rows))
    got = q(str(tmp_path), "select p50_ms, p90_ms, p95_ms, p99_ms from tenant_red_daily where tenant_id = 'a'")
    assert len(got) == 1  # 5000 spans over ~24h: one day
    for value, quant in zip(got[0], (0.5, 0.9, 0.95, 0.99)):
        exact = np.quantile(durations, quant, method="lower")
        assert abs(value - exact) <= sketch.RELATIVE_ACCURACY * exact + 1e-9


def test_red_daily_equals_merge_of_hours(planted):
    day = q(planted, "select requests, p95_ms from tenant_red_daily where tenant_id = 'quiet' "
                     "and service_name = 'api' and day = '2026-11-01'")
    hours = q(planted, "select sum(requests) from tenant_red_hourly where tenant_id = 'quiet' "
                       "and service_name = 'api' and hour < '2026-11-02'")
    assert day[0][0] == hours[0][0] == 24 * 60
    assert 20.0 * 0.9 <= day[0][1] <= 22.0 * 1.01


def test_latency_regression_raises_latency_slo_alert(planted):
    rows = q(planted, "select tenant_id, slo, rule from slo_burn_alerts where severity = 'page'")
    assert ("slowco", "latency_250ms", "page_1h_5m") in rows
    assert {r[0] for r in rows} == {"slowco"}


def test_quiet_control_raises_nothing(planted):
    assert q(planted, "select * from slo_burn_alerts where tenant_id = 'quiet'") == []
    assert q(planted, "select * from security_findings where tenant_id = 'quiet'") == []
    assert q(planted, "select * from noisy_neighbours where noisy_tenant_id = 'quiet'") == []


def test_noisy_tenant_is_flagged_on_the_shared_service(planted):
    rows = q(planted, "select noisy_tenant_id, service_name, hour from noisy_neighbours")
    assert rows == [("noisy", "search", T0 + dt.timedelta(hours=28))]


def test_noisy_neighbours_is_not_visible_in_tenant_scope(planted):
    with pytest.raises(querying.QueryError):
        querying.run(planted, "select * from noisy_neighbours", tenant="noisy")


def test_brute_force_burst_is_an_auth_failure_anomaly_with_evidence(planted):
    rows = q(planted, "select time, severity, score, evidence_trace_ids from security_findings "
                      "where tenant_id = 'intruder' and kind = 'auth_failures_anomaly'")
    assert len(rows) == 1
    time, severity, score, traces = rows[0]
    assert time == T0 + dt.timedelta(hours=28) and severity == "high" and score > 12
    assert traces and all(t.startswith("bf") for t in traces)


def test_cross_tenant_access_is_flagged_with_its_trace_id(planted):
    rows = q(planted, "select kind, severity, evidence_trace_ids, detail from security_findings "
                      "where tenant_id = 'intruder' and kind in ('cross_tenant_access', 'tenant_mismatch') order by kind")
    assert rows == [("cross_tenant_access", "high", ["c" * 32], "resources owned by: quiet"),
                    ("tenant_mismatch", "medium", ["d" * 32], "baggage claimed: quiet")]


def test_security_daily_counts(planted):
    rows = q(planted, "select auth_failures, cross_tenant_access, tenant_mismatch from tenant_security_daily "
                      "where tenant_id = 'intruder' and day = '2026-11-02'")
    assert rows == [(300.0, 1.0, 1.0)]


def test_slo_daily_budget(planted):
    rows = q(planted, "select day, attainment_pct, error_budget_remaining_pct from tenant_slo_daily "
                      "where tenant_id = 'slowco' and slo = 'latency_250ms' order by day")
    assert rows[0][1] == 100.0 and rows[0][2] == 100.0
    # day 2: hours 28-29 slow (120 of 6 hours * 70 requests) → far over a 1% budget
    assert rows[1][2] < 0


def test_sql_looking_tenant_ids_stay_data(tmp_path):
    evil = "x'; drop view spans;--"
    rows = [{"tenant": evil, "service": "api", "name": "op", "start_ns": T0_NS + i * 10**9, "duration_ms": 10.0}
            for i in range(10)]
    build_warehouse(tmp_path, make_spans(rows))
    assert q(str(tmp_path), "select tenant_id, requests from tenant_red_hourly") == [(evil, 10.0)]


def test_service_quantiles_come_from_operation_buckets_and_older_runs_count_once(tmp_path):
    """tenant_sre_hourly's quantiles sum the operation-level buckets over operations; runs of
    versions that also wrote the service-level table (latency_sketch_hourly) count once."""
    rng = np.random.default_rng(11)
    rows = [{"tenant": "a", "service": "api", "name": name, "start_ns": T0_NS + int(o), "duration_ms": float(d)}
            for name, ms in (("GET /fast", 10.0), ("GET /slow", 300.0))
            for o, d in zip(rng.integers(0, HOUR_NS, 500), rng.lognormal(np.log(ms), 0.3, 500))]
    spans = make_spans(rows)
    durations = spans["duration_ms"].to_numpy()
    new, old = spans.slice(0, 600), spans.slice(600)
    wh = build_warehouse(tmp_path, new, run_id="r-new")
    # an older version's run: the same families plus the service-level sketch, for the same batch
    parts = sre_partials(old)
    assert "latency_sketch_hourly" not in parts
    op = parts["latency_sketch_op_hourly"]
    service = (op.group_by(["hour", "tenant_id", "service_name", "key"]).aggregate([("count", "sum")])
               .rename_columns(["hour", "tenant_id", "service_name", "key", "count"]))
    for name, part in [*parts.items(), ("latency_sketch_hourly", service)]:
        wh.write_part(name, "r-old", f"{name}-0", part.append_column("ingest_batch", pa.repeat(pa.scalar("r-old"), part.num_rows)))
    wh.commit("r-old", ["in-r-old"])
    got = q(str(tmp_path), "select requests, p50_ms, p99_ms from tenant_sre_hourly where tenant_id = 'a'")
    assert len(got) == 1 and got[0][0] == 1000
    (buckets,) = q(str(tmp_path), "select sum(count) from stg_latency_sketch_hourly where tenant_id = 'a'")[0]
    assert buckets == 1000  # neither the old run's service rows nor its operation rows twice
    for value, quant in zip(got[0][1:], (0.5, 0.99)):
        exact = np.quantile(durations, quant, method="lower")
        assert abs(value - exact) <= sketch.RELATIVE_ACCURACY * exact + 1e-9
