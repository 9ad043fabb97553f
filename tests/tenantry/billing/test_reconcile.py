"""Reconciliation: each kind of revenue leakage, priced with the tenant's plan (hand-computed)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

import pytest
from conftest import day, make_config

from tenantry.billing import lakeio
from tenantry.billing.invoice import bill
from tenantry.billing.reconcile import reconcile

NOW = dt.datetime(2026, 12, 1, 2, tzinfo=dt.timezone.utc)
CFG = make_config({
    "plans": {"pro": {"currency": "usd", "meters": {"api_calls": {"model": "per_unit", "unit_price": "0.01",
                                                                  "included": 100}}}},
    "tenants": {"acme": {"plan": "pro", "billing": {"stripe_customer_id": "cus_acme"}},
                "nobill": {"plan": "pro"}, "idle": {"plan": "pro", "billing": {"stripe_customer_id": "cus_idle"}}},
})


def events(wh, rows):
    recs = [{"event_id": f"e{i}", "tenant_id": t, "meter": m, "quantity": D(q), "unit": None, "time": day(d),
             "dimensions": [], "source": s, "service_name": "svc", "ingest_batch": "ev"} for i, (t, m, q, d, s) in enumerate(rows)]
    lakeio.commit_run(wh, "events-1", {"usage_events": lakeio.table("usage_events", recs)}, {})


def outbox(wh, rows):
    recs = [{"provider": p, "entry_id": e, "idempotency_key": "k", "tenant_id": "acme", "meter": "api_calls",
             "period_start": day("2026-11-02"), "period_end": day("2026-11-03"), "quantity": D(0), "status": s,
             "attempts": 1, "pushed_at": NOW, "ingest_batch": "export-test"} for p, e, s in rows]
    lakeio.commit_run(wh, "export-test", {"export_outbox": lakeio.table("export_outbox", recs)}, {})


@pytest.fixture
def report(wh, write_ledger):
    write_ledger([
        {"tenant": "acme", "meter": "api_calls", "start": "2026-11-02", "quantity": "600", "entry_id": "a1"},
        {"tenant": "acme", "meter": "api_calls", "start": "2026-11-03", "quantity": "400", "entry_id": "a2"},
        {"tenant": "nobill", "meter": "api_calls", "start": "2026-11-03", "quantity": "300", "entry_id": "n1"},
        {"tenant": "ghost'--", "meter": "api_calls", "start": "2026-11-03", "quantity": "7", "entry_id": "g1"},
    ])
    bill(wh.root, CFG, "2026-11", now=NOW)
    write_ledger([{"tenant": "acme", "meter": "api_calls", "start": "2026-11-04", "quantity": "500", "entry_id": "a3",
                   "kind": "adjustment"}])
    events(wh, [("acme", "api_calls", "1000", "2026-11-02", "derived"), ("acme", "api_calls", "900", "2026-11-02", "app"),
                ("acme", "storage", "5", "2026-11-02", "app")])
    outbox(wh, [("stripe", "a1", "failed"), ("stripe", "a1", "acknowledged"), ("stripe", "a2", "rejected")])
    rep = reconcile(wh.root, CFG, "2026-11", now=NOW)
    return {(f["tenant_id"], f["kind"], f["provider"]): f for f in rep.findings}, rep


def test_telemetry_vs_app_gap_is_priced_at_the_margin(report):
    f = report[0][("acme", "telemetry_vs_app", None)]
    assert (f["expected_quantity"], f["actual_quantity"], f["gap_quantity"]) == (D(1000), D(900), D(100))
    assert f["amount_at_risk"] == D("1.00") and f["currency"] == "usd"


def test_rejected_and_unexported_entries_per_provider(report):
    rejected = report[0][("acme", "rejected", "stripe")]
    unexported = report[0][("acme", "unexported", "stripe")]
    assert rejected["gap_quantity"] == D(400) and unexported["gap_quantity"] == D(500)
    # 1,500 used, 100 included: the 500 on top are worth 5.00; the 400 under them 4.00
    assert unexported["amount_at_risk"] == D("5.00") and rejected["amount_at_risk"] == D("5.00") - D("1.00")
    assert ("acme", "failed", "stripe") not in report[0]  # a later acknowledgement wins


def test_overage_grown_after_billing_is_reported(report):
    f = report[0][("acme", "overage_not_billed", None)]
    assert (f["expected_quantity"], f["actual_quantity"], f["amount_at_risk"]) == (D(1400), D(900), D("5.00"))


def test_tenants_without_plan_or_billing_account(report):
    assert report[0][("nobill", "no_billing_account", None)]["amount_at_risk"] == D("2.00")
    ghost = report[0][("ghost'--", "no_plan", None)]
    assert ghost["amount_at_risk"] is None and "not in the tenant catalog" in ghost["detail"]
    assert not any(k[0] == "idle" for k in report[0])


def test_the_revenue_leakage_view_shows_the_latest_run(wh, report):
    reconcile(wh.root, CFG, "2026-11", now=NOW + dt.timedelta(hours=1))
    wh.build_views()
    got = wh.connect().execute("select count(*), count(distinct reconcile_run) from revenue_leakage").fetchone()
    assert got == (len(report[1].findings), 1)


def test_entitlement_status_flags_overage(wh, report):
    wh.build_views()
    got = wh.connect().execute("select tenant_id, included, used, overage, over_included from entitlement_status "
                               "order by tenant_id").fetchall()
    assert got == [("acme", D(100), D(1500), D(1400), True), ("idle", D(100), D(0), D(0), False),
                   ("nobill", D(100), D(300), D(200), True)]
