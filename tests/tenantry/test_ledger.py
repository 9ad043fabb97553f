"""The usage ledger: exact balances under duplicates, re-runs, late data; quarantine with reasons."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from tenantry.config import ConfigError, parse
from tenantry.ledger import settings, update_for_run
from tenantry.ledger.testing import UsageEvent as E
from tenantry.ledger.testing import balances, committed, ledger_run, usage_table
from tenantry.meters import MeterError
from tenantry.warehouse import Warehouse

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
DAY0 = dt.datetime(2026, 3, 10, tzinfo=UTC)
CFG = parse({"meters": [{"name": "api.calls", "unit": "{call}"}]})


@pytest.fixture
def wh(tmp_path):
    return Warehouse.open(tmp_path / "wh")


def entries(wh):
    return committed(wh, "usage_ledger", "select meter, quantity, revision, kind, supersedes, entry_id, event_count "
                                         "from t order by meter, period_start, dimensions_key, revision")


def test_balance_is_exact_decimal_sum(wh):
    ledger_run(wh, "r1", [E(f"e{i}", "acme", "api.calls", "0.1", T0) for i in range(10)], CFG, T0)
    assert balances(wh) == {("acme", "api.calls", DAY0, "{}"): Decimal("1.000000000")}


def test_duplicates_within_a_run_count_once_and_are_reported(wh):
    events = [E("e1", "acme", "api.calls", "2", T0)] * 3 + [E("e2", "acme", "api.calls", "5", T0)]
    report = ledger_run(wh, "r1", events, CFG, T0)
    assert (report.events_in, report.accepted, report.duplicates_in_run) == (4, 2, 2)
    assert report.balanced
    assert balances(wh)[("acme", "api.calls", DAY0, "{}")] == Decimal(7)


def test_same_event_id_in_two_tenants_is_two_events(wh):
    ledger_run(wh, "r1", [E("e1", "acme", "api.calls", "1", T0), E("e1", "globex", "api.calls", "1", T0)], CFG, T0)
    assert len(balances(wh)) == 2


def test_rerun_over_the_same_events_adds_no_entry(wh):
    events = [E(f"e{i}", "acme", "api.calls", "1", T0) for i in range(5)]
    ledger_run(wh, "r1", events, CFG, T0)
    before = entries(wh)
    report = ledger_run(wh, "r2", events, CFG, T0 + dt.timedelta(hours=1))
    assert report.duplicates_history == 5 and report.entries_written == 0
    assert entries(wh) == before


def test_late_event_for_open_period_adds_a_revision_superseding_the_last(wh):
    ledger_run(wh, "r1", [E("e1", "acme", "api.calls", "1", T0)], CFG, T0)
    ledger_run(wh, "r2", [E("e2", "acme", "api.calls", "4", T0)], CFG, T0 + dt.timedelta(hours=2))
    (m1, q1, rev1, k1, s1, id1, _), (m2, q2, rev2, k2, s2, _, _) = entries(wh)
    assert (q1, rev1, k1, s1) == (Decimal(1), 1, "usage", None)
    assert (q2, rev2, k2, s2) == (Decimal(4), 2, "usage", id1)  # a delta, not a total
    assert balances(wh)[("acme", "api.calls", DAY0, "{}")] == Decimal(5)


def test_event_for_closed_period_becomes_an_adjustment(wh):
    cfg = parse({"meters": [{"name": "api.calls"}], "ledger": {"grace_period": "1d"}})
    ledger_run(wh, "r1", [E("e1", "acme", "api.calls", "1", T0)], cfg, T0)
    report = ledger_run(wh, "r2", [E("e2", "acme", "api.calls", "2", T0)], cfg, DAY0 + dt.timedelta(days=2, seconds=1))
    assert report.adjustments == 1
    first, adj = entries(wh)
    assert (adj[3], adj[4], adj[1]) == ("adjustment", first[5], Decimal(2))


def test_first_usage_of_a_closed_period_is_an_adjustment_without_supersedes(wh):
    ledger_run(wh, "r1", [E("e1", "acme", "api.calls", "1", T0)], CFG, T0 + dt.timedelta(days=10))
    [(_, _, rev, kind, sup, _, _)] = entries(wh)
    assert (rev, kind, sup) == (1, "adjustment", None)


@pytest.mark.parametrize("offset", [dt.timedelta(days=36), dt.timedelta(minutes=-11)])
def test_events_too_old_or_too_far_ahead_are_quarantined(wh, offset):
    report = ledger_run(wh, "r1", [E("e1", "acme", "api.calls", "1", T0 - offset)], CFG, T0)
    assert report.quarantined == {"timestamp_out_of_range": 1} and report.balanced
    assert balances(wh) == {}
    [(reason, processor, raw)] = committed(wh, "quarantine", "select reason, processor, raw from t")
    assert (reason, processor) == ("timestamp_out_of_range", "ledger") and '"e1"' in raw


def test_undeclared_meter_reaches_the_ledger_with_its_own_unit_and_is_reported(wh):
    report = ledger_run(wh, "r1", [E("e1", "acme", "gpu.seconds", "3.5", T0, unit="s")], CFG, T0)
    assert report.undeclared_meters == ["gpu.seconds"]
    assert committed(wh, "usage_ledger", "select meter, quantity, unit from t") == [("gpu.seconds", Decimal("3.5"), "s")]


def test_strict_quarantines_undeclared_meters(wh):
    cfg = parse({"meters": [{"name": "api.calls"}], "ledger": {"strict": True}})
    report = ledger_run(wh, "r1", [E("e1", "acme", "gpu.seconds", "1", T0), E("e2", "acme", "api.calls", "1", T0)],
                        cfg, T0)
    assert report.quarantined == {"undeclared_meter": 1} and report.accepted == 1
    assert [k[1] for k in balances(wh)] == ["api.calls"]


def test_negative_quantity_is_quarantined(wh):
    report = ledger_run(wh, "r1", [E("e1", "acme", "api.calls", "-1", T0)], CFG, T0)
    assert report.quarantined == {"invalid_quantity": 1}


def test_group_by_keeps_only_declared_dimensions_in_canonical_order(wh):
    cfg = parse({"meters": [{"name": "tokens", "group_by": ["model", "région"]}]})
    ledger_run(wh, "r1", [
        E("e1", "acme", "tokens", "1", T0, (("région", "eu"), ("model", "m1"), ("noise", "x"))),
        E("e2", "acme", "tokens", "2", T0, (("model", "m1"), ("région", "eu"))),
        E("e3", "acme", "tokens", "4", T0, (("model", 'm"2'),)),
    ], cfg, T0)
    assert balances(wh) == {
        ("acme", "tokens", DAY0, '{"model":"m1","région":"eu"}'): Decimal(3),
        ("acme", "tokens", DAY0, '{"model":"m\\"2"}'): Decimal(4),
    }


def test_max_aggregation_balance_is_the_max_across_runs(wh):
    cfg = parse({"meters": [{"name": "seats", "aggregation": "max", "period": "month"}]})
    ledger_run(wh, "r1", [E("e1", "acme", "seats", "5", T0), E("e2", "acme", "seats", "3", T0)], cfg, T0)
    ledger_run(wh, "r2", [E("e3", "acme", "seats", "4", T0)], cfg, T0 + dt.timedelta(hours=1))
    ledger_run(wh, "r3", [E("e4", "acme", "seats", "9", T0)], cfg, T0 + dt.timedelta(hours=2))
    month = dt.datetime(2026, 3, 1, tzinfo=UTC)
    assert balances(wh) == {("acme", "seats", month, "{}"): Decimal(9)}
    assert [e[1] for e in entries(wh)] == [Decimal(5), Decimal(0), Decimal(4)]


def test_latest_aggregation_follows_event_time_not_arrival(wh):
    cfg = parse({"meters": [{"name": "storage", "aggregation": "latest"}]})
    ledger_run(wh, "r1", [E("e1", "acme", "storage", "10", T0)], cfg, T0)
    ledger_run(wh, "r2", [E("e0", "acme", "storage", "99", T0 - dt.timedelta(hours=1))], cfg, T0)
    ledger_run(wh, "r3", [E("e2", "acme", "storage", "7", T0 + dt.timedelta(hours=1))], cfg, T0 + dt.timedelta(hours=1))
    assert list(balances(wh).values()) == [Decimal(7)]


def test_count_aggregation_counts_events_not_quantities(wh):
    cfg = parse({"meters": [{"name": "logins", "aggregation": "count"}]})
    ledger_run(wh, "r1", [E("e1", "acme", "logins", "5", T0), E("e2", "acme", "logins", "7", T0)], cfg, T0)
    assert list(balances(wh).values()) == [Decimal(2)]


def test_hourly_and_monthly_periods(wh):
    cfg = parse({"meters": [{"name": "h", "period": "hour"}, {"name": "m", "period": "month"}]})
    ledger_run(wh, "r1", [E("e1", "acme", "h", "1", T0.replace(minute=59)), E("e2", "acme", "m", "1", T0)], cfg,
               T0 + dt.timedelta(hours=1))
    got = committed(wh, "usage_ledger", "select meter, period_start, period_end from t order by meter")
    assert got == [("h", T0, T0 + dt.timedelta(hours=1)),
                   ("m", dt.datetime(2026, 3, 1, tzinfo=UTC), dt.datetime(2026, 4, 1, tzinfo=UTC))]


def test_dedup_remembers_an_id_within_the_window_even_with_a_new_time(wh):
    ledger_run(wh, "r1", [E("e1", "acme", "api.calls", "1", T0)], CFG, T0)
    later = T0 + dt.timedelta(days=20)
    report = ledger_run(wh, "r2", [E("e1", "acme", "api.calls", "1", later)], CFG, later)
    assert report.duplicates_history == 1 and sum(balances(wh).values()) == 1


def test_hostile_tenant_and_meter_names_are_stored_as_themselves(wh):
    tenant, meter = "x'); drop table t; --", "m\"]; select 1; 🚀"
    ledger_run(wh, "r1", [E("e1", tenant, meter, "1", T0, (("k'", "v\\"),))], CFG, T0)
    assert committed(wh, "usage_ledger", "select tenant_id, meter, quantity from t") == [(tenant, meter, Decimal(1))]


def test_entry_ids_are_deterministic_across_warehouses(tmp_path):
    events = [E(f"e{i}", "acme", "api.calls", "1", T0) for i in range(3)]
    ids = []
    for name in ("a", "b"):
        w = Warehouse.open(tmp_path / name)
        ledger_run(w, "r1", events, CFG, T0)
        ids.append([e[5] for e in entries(w)])
    assert ids[0] == ids[1]


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 2, 0)])
@pytest.mark.parametrize("split", [False, True])
def test_disagreeing_deliveries_of_one_id_keep_the_same_one_in_any_order_and_split(tmp_path, order, split):
    # same id, same time, different content: the choice must not depend on delivery order or files
    deliveries = [E("e1", "acme", "api.calls", "2", T0, source="app"), E("e1", "acme", "api.calls", "1", T0, unit="x"),
                  E("e1", "acme", "api.calls", "1", T0, source="derived", trace_id="t1")]
    wh = Warehouse.open(tmp_path / "wh")
    events = [deliveries[i] for i in order]
    parts = [events[:1], events[1:]] if split else [events]
    for i, part in enumerate(parts):
        wh.write_part("usage_events", "r1", f"usage-{i}", usage_table(part, ingest_batch=f"in-{i}"))
    report = update_for_run(wh, "r1", CFG, T0)
    wh.commit("r1", ["in-0", "in-1"])
    assert (report.accepted, report.duplicates_in_run) == (1, 2)
    assert committed(wh, "usage_dedup", "select quantity, source, trace_id from t") == [(Decimal(1), "app", None)]
    assert balances(wh) == {("acme", "api.calls", DAY0, "{}"): Decimal(1)}


def test_index_parts_hold_only_counted_events_and_no_empty_part(wh, monkeypatch):
    import tenantry.ledger.run as lr

    monkeypatch.setattr(lr, "INDEX_CHUNK_ROWS", 2)
    ledger_run(wh, "r1", [E(f"e{i}", "acme", "api.calls", "1", T0) for i in range(4)], CFG, T0)
    # r1 counted e0-e3; e2 is also delivered twice in r2; parts whose events are all dropped write no file
    events = [E(f"e{i}", "acme", "api.calls", "1", T0) for i in (0, 1, 2, 2, 5, 6)]
    report = ledger_run(wh, "r2", events, CFG, T0)
    assert (report.accepted, report.duplicates_in_run, report.duplicates_history) == (2, 1, 3)
    assert committed(wh, "usage_dedup", "select event_id from t where ingest_batch = 'r2' order by 1") == [("e5",), ("e6",)]
    assert all(pq_rows(p) > 0 for p in (wh.lake / "usage_dedup" / "run=r2").glob("*.parquet"))


def pq_rows(path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def test_a_run_without_usage_writes_nothing(wh):
    report = update_for_run(wh, "r1", CFG, T0)
    assert report.events_in == 0 and not (wh.lake / "usage_ledger" / "run=r1").exists()


def test_repeating_the_step_before_commit_rewrites_the_same_parts(wh):
    wh.write_part("usage_events", "r1", "u", usage_table([E(f"e{i}", "acme", "api.calls", "1", T0) for i in range(4)]))
    update_for_run(wh, "r1", CFG, T0)
    first = sorted(p.name for p in wh.lake.glob("*/run=r1/ledger-*"))
    update_for_run(wh, "r1", CFG, T0)
    assert sorted(p.name for p in wh.lake.glob("*/run=r1/ledger-*")) == first


def test_bad_meter_definition_fails_before_writing(wh):
    cfg = parse({"meters": [{"name": "x", "source": "spans", "filter": "kind ==", "aggregation": "count"}]})
    wh.write_part("usage_events", "r1", "u", usage_table([E("e1", "acme", "x", "1", T0)]))
    with pytest.raises(MeterError, match=r"meters\[0\] \('x'\)\.filter.*position 7"):
        update_for_run(wh, "r1", cfg, T0)
    assert not (wh.lake / "usage_ledger" / "run=r1").exists()


def test_naive_now_is_rejected(wh):
    with pytest.raises(ValueError, match="timezone-aware"):
        update_for_run(wh, "r1", CFG, dt.datetime(2026, 1, 1))


@pytest.mark.parametrize("ledger_cfg, key", [
    ({"dedup_window_days": 7}, "ledger.dedup_window_days"),
    ({"max_past_days": 90}, "max_past_days"),
    ({"grace_period": "soon"}, "ledger.grace_period"),
    ({"stritc": True}, "ledger.stritc"),
])
def test_invalid_ledger_settings_name_the_key(ledger_cfg, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        settings(parse({"ledger": ledger_cfg}))


def test_grace_period_accepts_units():
    assert settings(parse({"ledger": {"grace_period": "36h"}})).grace_period == dt.timedelta(hours=36)
