"""plans: validation with located errors, and plan timelines (changes, trials)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

import pytest
from conftest import make_config

from tenantry.billing.plans import PlanError, assignments, parse_plans

UTC = dt.timezone.utc


@pytest.mark.parametrize("plans, where", [
    ({"pro": {"meters": {"x": {"model": "per_unit", "unit_price": 0.1}}}}, "plans.pro.meters.x.per_unit.unit_price"),
    ({"pro": {"meters": {"x": {"model": "tiered"}}}}, "plans.pro.meters.x: unknown price model"),
    ({"pro": {"meters": {"x": {"unit_price": "1"}}}}, "plans.pro.meters.x: missing `model:`"),
    ({"pro": {"currency": "dollars"}}, "plans.pro.currency"),
    ({"pro": {"colour": "red"}}, "plans.pro.colour: unknown key"),
    ({"pro": {"meters": {"x": {"model": "graduated", "tiers": [{"up_to": 10}, {"up_to": 5}, {"up_to": None}]}}}},
     "must be greater than the previous"),
    ({"pro": {"meters": {"x": {"model": "volume", "tiers": [{"up_to": 10}]}}}}, "last tier must have up_to: null"),
    ({"pro": {"meters": {"x": {"model": "package", "package_size": 0, "package_price": "1"}}}}, "package_size"),
    ({"pro": {"meters": {"x": {"model": "per_unit", "unit_price": "-1"}}}}, "unit_price"),
    ({"pro": {"meters": {"x": {"model": "per_unit", "unit_price": "NaN"}}}}, "unit_price"),
])
def test_invalid_plans_are_refused_naming_file_and_key(plans, where):
    with pytest.raises(PlanError) as e:
        parse_plans(plans, "demo.yaml")
    assert str(e.value).startswith("demo.yaml: plans.pro") and where in str(e.value)


def test_the_demo_plans_parse():
    plans = parse_plans({"free": {"currency": "usd"}, "pro": None})
    assert plans["free"].currency == "usd" and plans["pro"].meters == {}


def test_prices_are_exact_decimals():
    p = parse_plans({"pro": {"meters": {"x": {"model": "per_unit", "unit_price": "0.1"}}}})["pro"]
    assert p.meters["x"].unit_price == D("0.1")


def test_unknown_plan_in_a_change_names_the_tenant_and_index():
    cfg = make_config({"plans": {"pro": {}}, "tenants": {"acme": {"plan": "pro", "plan_changes": [
        {"plan": "gold", "effective": "2026-11-15"}]}}})
    with pytest.raises(PlanError, match=r"tenants\.acme\.plan_changes\[0\]\.plan: unknown plan 'gold'; known plans: pro"):
        assignments(cfg, parse_plans(cfg.plans))


def test_bad_dates_and_trials_without_trial_days_are_refused():
    cfg = make_config({"plans": {"pro": {}}, "tenants": {
        "a": {"plan": "pro", "plan_changes": [{"plan": "pro", "effective": "someday"}]},
        "b": {"plan": "pro", "trial_start": "2026-11-20"}}})
    with pytest.raises(PlanError) as e:
        assignments(cfg, parse_plans(cfg.plans))
    assert "tenants.a.plan_changes[0].effective" in str(e.value)
    assert "tenants.b.trial_start: plan 'pro' has no trial_days" in str(e.value)


def test_segments_split_at_changes_and_trial_edges():
    cfg = make_config({"plans": {"pro": {"trial_days": 5}, "ent": {}}, "tenants": {"a": {
        "plan": "pro", "trial_start": "2026-11-03", "plan_changes": [{"plan": "ent", "effective": "2026-11-20"},
                                                                     {"plan": None, "effective": "2026-11-25"}]}}})
    a = assignments(cfg, parse_plans(cfg.plans))["a"]
    s = a.segments(dt.datetime(2026, 11, 1, tzinfo=UTC), dt.datetime(2026, 12, 1, tzinfo=UTC))
    assert [(x.start.day, x.plan, x.trial) for x in s] == [(1, "pro", False), (3, "pro", True), (8, "pro", False),
                                                           (20, "ent", False), (25, None, False)]
    assert sum(x.fraction_of(s[0].start, s[-1].end) for x in s) == 1


def test_no_plan_before_plan_start():
    cfg = make_config({"plans": {"pro": {}}, "tenants": {"a": {"plan": "pro", "plan_start": "2026-11-10"}}})
    a = assignments(cfg, parse_plans(cfg.plans))["a"]
    s = a.segments(dt.datetime(2026, 11, 1, tzinfo=UTC), dt.datetime(2026, 12, 1, tzinfo=UTC))
    assert [(x.start.day, x.plan) for x in s] == [(1, None), (10, "pro")]
