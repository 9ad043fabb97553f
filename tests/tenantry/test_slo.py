"""SLO config model, burn-rate windows computed by hand, SLA credit ledger entries."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from tenantry import config, querying, schemas, slo
from tests.sql.test_sre_views import T0, T0_NS, build_warehouse, make_spans

MIN_NS = 60 * 10**9


def test_slos_validate_with_located_errors():
    with pytest.raises(slo.SloConfigError, match=r"tenantry.yaml: slos.gold.latency.threshold_ms: 300 is not a counted"):
        slo.parse_slos(config.parse({"slos": {"gold": {"latency": {"threshold_ms": 300, "objective": 99}}}}))
    with pytest.raises(slo.SloConfigError, match=r"slos.gold.availabilty: unknown key"):
        slo.parse_slos({"gold": {"availabilty": 99.9}})
    with pytest.raises(slo.SloConfigError, match=r"slos.gold.availability"):
        slo.parse_slos({"gold": {"availability": 100}})


def test_sla_validates_with_located_errors():
    cfg = config.parse({"plans": {"pro": {"sla": {"availability": 99.9, "credit_percent": "lots"}}}})
    with pytest.raises(slo.SloConfigError, match=r"plans.pro.sla.credit_percent"):
        slo.plan_slas(cfg)


def test_targets_resolve_tier_then_default():
    cfg = config.parse({"tenants": {"a": {"tier": "gold"}, "b": {"tier": "bronze"}},
                        "slos": {"gold": {"availability": 99.95}, "default": {"availability": 99.0, "window_days": 7}}})
    rows = slo.targets_table(cfg, T0).select(["tenant_id", "objective_pct", "window_days"]).to_pylist()
    assert rows == [{"tenant_id": "a", "objective_pct": 99.95, "window_days": 30},
                    {"tenant_id": "b", "objective_pct": 99.0, "window_days": 7},
                    {"tenant_id": "*", "objective_pct": 99.0, "window_days": 7}]


def test_no_slos_means_no_targets():
    assert slo.targets_table(config.parse({}), T0).num_rows == 0


def _burn_workload(error_per_minute: int) -> list[dict]:
    """100 requests a minute for 65 minutes; minutes 60-64 have ``error_per_minute`` errors each."""
    rows = []
    for m in range(65):
        for i in range(100):
            rows.append({"tenant": "b", "service": "api", "name": "op", "start_ns": T0_NS + m * MIN_NS + i,
                         "duration_ms": 10.0, "status": "error" if (m >= 60 and i < error_per_minute) else "unset"})
    return rows


@pytest.fixture(scope="module")
def burn(tmp_path_factory):
    root = tmp_path_factory.mktemp("burn")
    cfg = config.parse({"slos": {"default": {"availability": 99.9}}})
    build_warehouse(root, make_spans(_burn_workload(20)), cfg)
    rows = querying.run(str(root), "select rule, started_at, max_long_burn_rate, max_short_burn_rate "
                                   "from slo_burn_alerts order by rule").rows
    return {r[0]: r[1:] for r in rows}


def test_page_1h_5m_fires_first_at_minute_64(burn):
    # at minute 64: 1h window (minutes 5-64) 100 bad / 6000 = 1/60 → burn 16.67 >= 14.4; 5m: 100/500 → 200.
    # at minute 63 the 1h window holds 80/6000 → 13.3 < 14.4: not yet.
    started, long_rate, short_rate = burn["page_1h_5m"]
    assert started == T0 + dt.timedelta(minutes=64)
    assert long_rate == pytest.approx(100 / 6000 / 0.001)
    assert short_rate == pytest.approx(100 / 500 / 0.001)


def test_page_6h_30m_fires_at_minute_61(burn):
    # minute 60: 20/6100 → 3.3 < 6; minute 61: 40/6200 → 6.45 (30m: 40/3000 → 13.3)
    assert burn["page_6h_30m"][0] == T0 + dt.timedelta(minutes=61)
    assert burn["page_6h_30m"][1] == pytest.approx(100 / 6500 / 0.001)


def test_tickets_fire_at_minute_60(burn):
    assert burn["ticket_1d_2h"][0] == T0 + dt.timedelta(minutes=60)  # 20/6100 → 3.28 >= 3
    assert burn["ticket_3d_6h"][0] == T0 + dt.timedelta(minutes=60)


def test_burn_below_every_factor_fires_nothing(tmp_path):
    cfg = config.parse({"slos": {"default": {"availability": 90.0}}})
    build_warehouse(tmp_path, make_spans(_burn_workload(5)), cfg)
    assert querying.run(str(tmp_path), "select * from slo_burn_alerts").rows == []


def test_sla_breach_produces_one_credit_entry(tmp_path):
    cfg = config.parse({"tenants": {"b": {"plan": "ent"}}, "plans": {"ent": {"sla": {"availability": 99.9, "credit_percent": 10}}}})
    wh = build_warehouse(tmp_path, make_spans(_burn_workload(20)), cfg)
    period = (T0, T0 + dt.timedelta(days=30))
    credits = slo.sla_credits(wh, cfg, period, computed_at=T0)
    assert credits.schema == schemas.USAGE_LEDGER
    (row,) = credits.cast(credits.schema.set(3, credits.schema.field(3).with_type(schemas.pa.timestamp("us", tz="UTC")))
                          ).drop_columns(["period_end", "computed_at"]).to_pylist()
    assert row["kind"] == "credit" and row["meter"] == "sla_credit" and row["tenant_id"] == "b"
    assert row["quantity"] == Decimal("10")
    assert row["dimensions_key"] == '{"sla":"availability"}'
    assert slo.sla_credits(wh, cfg, period, computed_at=T0)["entry_id"] == credits["entry_id"]  # re-run: same id
    (ev,) = slo.sla_evidence(wh, cfg, period)
    assert ev["errors"] == 100 and ev["requests"] == 6500 and ev["breached"]


def test_sla_met_or_no_sla_produces_nothing(tmp_path):
    cfg = config.parse({"tenants": {"b": {"plan": "ent"}}, "plans": {"ent": {"sla": {"availability": 90, "credit_percent": 5}}}})
    wh = build_warehouse(tmp_path, make_spans(_burn_workload(20)), cfg)
    assert slo.sla_credits(wh, cfg, (T0, T0 + dt.timedelta(days=1))).num_rows == 0
    assert slo.sla_credits(wh, config.parse({}), (T0, T0 + dt.timedelta(days=1))).num_rows == 0


def test_sla_period_must_be_aware_and_ordered(tmp_path):
    cfg = config.parse({"tenants": {"b": {"plan": "ent"}}, "plans": {"ent": {"sla": {"availability": 99, "credit_percent": 5}}}})
    wh = build_warehouse(tmp_path, make_spans(_burn_workload(0)), cfg)
    with pytest.raises(slo.SloConfigError, match="timezone-aware"):
        slo.sla_credits(wh, cfg, (dt.datetime(2026, 11, 2), dt.datetime(2026, 11, 1)))
