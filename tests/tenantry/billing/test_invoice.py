"""A full month per price model, hand-computed; re-rating appends differences; trials and plan changes."""

from __future__ import annotations

import csv
import datetime as dt
import json
from decimal import Decimal as D

import pytest
from conftest import make_config

from tenantry.billing.invoice import bill, existing_lines

NOV_END = dt.datetime(2026, 12, 1, 1, tzinfo=dt.timezone.utc)

PLANS = {
    "flat": {"currency": "usd", "meters": {"platform": {"model": "flat", "amount": "49.00"}}},
    "unit": {"currency": "usd", "meters": {"seats": {"model": "per_unit", "unit_price": "12.50", "included": 2}}},
    "grad": {"currency": "usd", "meters": {"api_calls": {"model": "graduated", "included": 1000, "tiers": [
        {"up_to": 10000, "unit_price": "0.002"}, {"up_to": 50000, "unit_price": "0.0015", "flat_fee": "1"},
        {"up_to": None, "unit_price": "0.001"}]}}},
    "vol": {"currency": "eur", "meters": {"events": {"model": "volume", "tiers": [
        {"up_to": 1000, "unit_price": "0.01"}, {"up_to": 10000, "unit_price": "0.008"},
        {"up_to": None, "unit_price": "0.005", "flat_fee": "3"}]}}},
    "pkg": {"currency": "jpy", "meters": {"storage_gb": {"model": "package", "package_size": 10, "package_price": "250"}}},
    "min": {"currency": "usd", "minimum_commitment": "100", "meters": {
        "api_calls": {"model": "per_unit", "unit_price": "0.01"}}},
    "trialing": {"currency": "usd", "trial_days": 10, "meters": {
        "platform": {"model": "flat", "amount": "30"}, "api_calls": {"model": "per_unit", "unit_price": "0.10"}}},
}


def cfg(tenants: dict) -> object:
    return make_config({"tenants": tenants, "plans": PLANS})


def daily(tenant: str, meter: str, per_day: str, days: int = 30) -> list[dict]:
    return [{"tenant": tenant, "meter": meter, "start": f"2026-11-{d:02d}", "quantity": per_day} for d in range(1, days + 1)]


def totals(wh, period="2026-11") -> dict[tuple, D]:
    out: dict = {}
    for ln in existing_lines(wh, period):
        k = (ln["tenant_id"], ln["meter"], ln["line_type"])
        out[k] = out.get(k, D(0)) + D(ln["amount"])
    return out


def test_flat_fee_is_charged_without_usage(wh, write_ledger):
    write_ledger(daily("acme", "api_calls", "1", 1))
    res = bill(wh.root, cfg({"acme": {"plan": "flat"}}), "2026-11", now=NOV_END)
    assert res.totals["acme"] == ("usd", D("49.00"))


def test_per_unit_charges_above_included(wh, write_ledger):
    # 5 seats on each of 30 days = 150 seat-days; 2 included → 148 × 12.50 = 1850.00
    write_ledger(daily("acme", "seats", "5"))
    res = bill(wh.root, cfg({"acme": {"plan": "unit"}}), "2026-11", now=NOV_END)
    assert res.totals["acme"] == ("usd", D("1850.00"))


def test_graduated_prices_each_tier_separately(wh, write_ledger):
    # 60,500 calls; 1,000 included → 59,500 billable:
    # 10,000 × 0.002 = 20; 40,000 × 0.0015 + 1 = 61; 9,500 × 0.001 = 9.5 → 90.50
    write_ledger(daily("acme", "api_calls", "2000", 30) + [{"tenant": "acme", "meter": "api_calls", "start": "2026-11-30", "quantity": "500", "entry_id": "extra"}])
    res = bill(wh.root, cfg({"acme": {"plan": "grad"}}), "2026-11", now=NOV_END)
    assert res.totals["acme"] == ("usd", D("90.50"))
    (line,) = existing_lines(wh, "2026-11")
    tiers = json.loads(line["tiers_json"])
    assert [t["units"] for t in tiers] == ["10000", "40000", "9500"]
    assert D(line["billable_quantity"]) == D(59500) and D(line["included"]) == D(1000)


def test_volume_prices_all_units_at_the_tier_reached(wh, write_ledger):
    # 12,000 events reach the third tier: 12,000 × 0.005 + 3 = 63.00 EUR
    write_ledger(daily("acme", "events", "400"))
    res = bill(wh.root, cfg({"acme": {"plan": "vol"}}), "2026-11", now=NOV_END)
    assert res.totals["acme"] == ("eur", D("63.00"))


def test_package_rounds_blocks_up_in_a_zero_decimal_currency(wh, write_ledger):
    # 30 × 3.3 = 99 GB → 10 blocks of 10 → 2,500 JPY
    write_ledger(daily("acme", "storage_gb", "3.3"))
    res = bill(wh.root, cfg({"acme": {"plan": "pkg"}}), "2026-11", now=NOV_END)
    assert res.totals["acme"] == ("jpy", D("2500"))


def test_minimum_commitment_tops_up_the_invoice(wh, write_ledger):
    write_ledger(daily("acme", "api_calls", "100"))  # 3,000 × 0.01 = 30 → true-up 70
    bill(wh.root, cfg({"acme": {"plan": "min"}}), "2026-11", now=NOV_END)
    t = totals(wh)
    assert t[("acme", "api_calls", "usage")] == D("30.00")
    assert t[("acme", "", "minimum_commitment")] == D("70.00")


def test_trial_usage_is_recorded_at_zero_and_fees_prorated(wh, write_ledger):
    # trial Nov 1-10 (10 of 30 days): usage then is free but recorded; flat fee 30 × 20/30 = 20
    write_ledger(daily("acme", "api_calls", "10"))
    bill(wh.root, cfg({"acme": {"plan": "trialing", "trial_start": "2026-11-01"}}), "2026-11", now=NOV_END)
    lines = existing_lines(wh, "2026-11")
    trial = [ln for ln in lines if ln["trial"]]
    assert {ln["meter"]: D(ln["quantity"]) for ln in trial} == {"api_calls": D(100)}  # a zero fee adds no line
    assert all(D(ln["amount"]) == 0 for ln in trial)
    t = totals(wh)
    assert t[("acme", "platform", "flat")] == D("20.00")
    assert t[("acme", "api_calls", "usage")] == D("20.00")  # 200 calls after the trial × 0.10


def test_plan_change_splits_the_month(wh, write_ledger):
    # unit plan until Nov 16 (15 days), then flat: 2 included seats prorated to 1; 15 × 5 - 1 = 74 × 12.5
    write_ledger(daily("acme", "seats", "5"))
    tenants = {"acme": {"plan": "unit", "plan_changes": [{"plan": "flat", "effective": "2026-11-16"}]}}
    bill(wh.root, cfg(tenants), "2026-11", now=NOV_END)
    t = totals(wh)
    assert t[("acme", "seats", "usage")] == D("925.00")
    assert t[("acme", "platform", "flat")] == D("24.50")  # 49 × 15/30
    assert ("acme", "seats", "usage") in t and len([k for k in t if k[1] == "seats"]) == 1


def test_rebilling_unchanged_input_appends_nothing(wh, write_ledger):
    write_ledger(daily("acme", "seats", "5"))
    c = cfg({"acme": {"plan": "unit"}})
    first = bill(wh.root, c, "2026-11", now=NOV_END)
    again = bill(wh.root, c, "2026-11", now=NOV_END)
    assert first.lines_written == 1 and again.lines_written == 0 and again.run_id is None


def test_rerating_after_an_adjustment_appends_the_difference(wh, write_ledger):
    write_ledger(daily("acme", "seats", "5"))
    c = cfg({"acme": {"plan": "unit"}})
    bill(wh.root, c, "2026-11", now=NOV_END)
    write_ledger([{"tenant": "acme", "meter": "seats", "start": "2026-11-03", "quantity": "2", "kind": "adjustment",
                   "revision": 1}])
    res = bill(wh.root, c, "2026-11", now=NOV_END)
    lines = existing_lines(wh, "2026-11")
    assert [ln["kind"] for ln in lines] == ["rating", "adjustment"]
    assert D(lines[1]["amount"]) == D("25.00") and D(lines[1]["quantity"]) == D(2)
    assert D(lines[0]["amount"]) == D("1850.00")  # the first line is untouched
    assert res.totals["acme"] == ("usd", D("1875.00"))


def test_a_plan_change_added_later_reverses_the_old_lines(wh, write_ledger):
    write_ledger(daily("acme", "seats", "5"))
    bill(wh.root, cfg({"acme": {"plan": "unit"}}), "2026-11", now=NOV_END)
    res = bill(wh.root, cfg({"acme": {"plan": "flat"}}), "2026-11", now=NOV_END)
    assert res.totals["acme"] == ("usd", D("49.00"))
    assert sum(D(ln["amount"]) for ln in existing_lines(wh, "2026-11") if ln["plan"] == "unit") == 0


def test_tenants_with_hostile_ids_and_unpriced_meters_are_rated_safely(wh, write_ledger):
    write_ledger([{"tenant": "x'; drop table t;--", "meter": "naïve ☃", "start": "2026-11-02", "quantity": "7"}])
    c = make_config({"tenants": {"acme": {"plan": "flat"}}, "plans": PLANS})
    res = bill(wh.root, c, "2026-11", now=NOV_END)
    assert set(res.totals) == {"acme"}  # not in the catalog: no invoice (reconcile reports it)


def test_files_hold_every_line_and_add_up(wh, write_ledger, tmp_path):
    write_ledger(daily("acme", "seats", "5") + daily("beta", "api_calls", "100"))
    bill(wh.root, cfg({"acme": {"plan": "unit"}, "beta": {"plan": "min"}}), "2026-11", now=NOV_END,
         out_dir=tmp_path / "out")
    rows = list(csv.DictReader(open(tmp_path / "out" / "invoice_lines-2026-11.csv")))
    assert sum(D(r["amount"]) for r in rows) == D("1850.00") + D("100.00")
    doc = json.loads((tmp_path / "out" / "invoice-2026-11.json").read_text())
    assert {t["tenant_id"]: t["total"] for t in doc["tenants"]} == {"acme": "1850", "beta": "100"}


@pytest.mark.parametrize("period", ["2026-13", "2026-1", "nov", "2026-11-01", "'; select 1"])
def test_bad_periods_are_refused_with_the_expected_form(wh, period):
    from tenantry.billing.plans import PlanError

    with pytest.raises(PlanError, match="2026-11"):
        bill(wh.root, cfg({}), period)


def test_invoice_lines_view_shows_the_lines(wh, write_ledger):
    write_ledger(daily("acme", "seats", "5"))
    bill(wh.root, cfg({"acme": {"plan": "unit"}}), "2026-11", now=NOV_END)
    wh.build_views()
    con = wh.connect()
    got = con.execute("select period_start, tenant_id, amount from invoice_lines").fetchall()
    assert got == [(dt.date(2026, 11, 1), "acme", D("1850.000000000"))]
