from datetime import timedelta

import pytest

from collector_processors.base import ProcessorConfigError
from collector_processors.limit_cardinality import LimitCardinality
from tenantry.schemas import OVERFLOW

from conftest import HOSTILE, NOW, assert_accounted, attrs_of, make_batch

ALL = ["spans", "logs", "metric_points", "usage_events"]


def _limit(**options):
    return LimitCardinality(options={"tables": ALL, **options})


def _vals(res, table, key="url"):
    return [a.get(key) for a in attrs_of(res.kept, table)]


def test_values_past_the_cap_overflow(table):
    rows = [{"tenant": "acme", "attrs": {"url": f"/u/{i}"}} for i in range(5)]
    res = _limit(max_values=3).process(table, make_batch(table, rows))
    assert _vals(res, table) == ["/u/0", "/u/1", "/u/2", OVERFLOW, OVERFLOW]
    assert res.stats[("acme", "limit_cardinality", "overflowed")] == 2
    assert_accounted(res, 5)


def test_repeated_admitted_values_stay(table):
    rows = [{"attrs": {"url": v}} for v in ["/a", "/b", "/a", "/c", "/b"]]
    assert _vals(_limit(max_values=2).process(table, make_batch(table, rows)), table) == ["/a", "/b", "/a", OVERFLOW, "/b"]


def test_cap_is_per_tenant_and_per_key(table):
    rows = [{"tenant": t, "attrs": {"url": f"/{i}", "user.id": f"u{i}"}} for t in ("acme", "globex") for i in range(2)]
    res = _limit(max_values=2).process(table, make_batch(table, rows))
    assert OVERFLOW not in _vals(res, table) + _vals(res, table, "user.id")


def test_state_carries_across_batches(table):
    p = _limit(max_values=2)
    p.process(table, make_batch(table, [{"attrs": {"url": "/a"}}, {"attrs": {"url": "/b"}}]))
    res = p.process(table, make_batch(table, [{"attrs": {"url": "/c"}}, {"attrs": {"url": "/a"}}]))
    assert _vals(res, table) == [OVERFLOW, "/a"]


def test_a_new_window_starts_a_new_count(table):
    p = _limit(max_values=1, window="1h")
    p.process(table, make_batch(table, [{"attrs": {"url": "/a"}}]))
    res = p.process(table, make_batch(table, [{"attrs": {"url": "/b"}, "time": NOW + timedelta(hours=1)}, {"attrs": {"url": "/c"}}]))
    assert _vals(res, table) == ["/b", OVERFLOW]


def test_only_listed_keys_are_limited_and_excluded_keys_never(table):
    rows = [{"attrs": {"url": f"/{i}", "tenant.id": f"t{i}", "x": f"{i}"}} for i in range(3)]
    res = _limit(max_values=1, keys=["url", "tenant.id"]).process(table, make_batch(table, rows))
    assert _vals(res, table) == ["/0", OVERFLOW, OVERFLOW]
    assert _vals(res, table, "tenant.id") == ["t0", "t1", "t2"]
    assert _vals(res, table, "x") == ["0", "1", "2"]


def test_usage_events_pass_through_by_default():
    rows = [{"attrs": {"url": f"/{i}"}} for i in range(3)]
    res = LimitCardinality(options={"max_values": 1}).process("usage_events", make_batch("usage_events", rows))
    assert _vals(res, "usage_events") == ["/0", "/1", "/2"]


def test_hostile_values_and_null_maps(table):
    rows = [{"attrs": {"k": h, h or "e": "v", "n": None}} for h in HOSTILE] + [{"attrs": None}, {"attrs": []}]
    res = _limit(max_values=3).process(table, make_batch(table, rows))
    assert res.kept.num_rows == len(rows)
    assert sum(a.get("k") == OVERFLOW for a in attrs_of(res.kept, table) if a) == len(HOSTILE) - 3
    assert _limit().process(table, make_batch(table, [])).kept.num_rows == 0


def test_old_windows_are_forgotten(table):
    p = _limit(max_values=1, retain_windows=2)
    for h in range(4):
        p.process(table, make_batch(table, [{"attrs": {"url": "/a"}, "time": NOW + timedelta(hours=h)}]))
    assert len(p._state) == 2


@pytest.mark.parametrize("options,message", [
    ({"max_values": 0}, "max_values"),
    ({"window": "forever"}, "window: expected a duration"),
    ({"tables": ["traces"]}, "tables.0: expected one of"),
])
def test_bad_config_names_the_key(options, message):
    with pytest.raises(ProcessorConfigError, match=message):
        LimitCardinality(options=options)
