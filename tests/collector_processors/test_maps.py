"""maps: the per-batch views a chain shares give exactly what each processor computes alone."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pyarrow as pa
import pytest

from collector_processors import limit_cardinality, maps
from collector_processors.base import Chain, count_by_tenant
from collector_processors.registry import build_chain
from tenantry.config import parse

from conftest import HOSTILE, NOW, make_batch

CHAIN = [
    {"attribute_tenant": {"policy": "unattributed"}},
    {"validate": {"max_past": None, "max_future": None}},
    {"redact": {"mode": "mask", "blocked_keys": ["password"]}},
    {"limit_cardinality": {"max_values": 2, "tables": ["spans", "logs", "usage_events"]}},
    {"redact/second": {"mode": "drop", "allowed_keys": ["url", "tenant.id", "user.email"]}},
    {"limit_cardinality/second": {"max_values": 1, "tables": ["spans", "logs", "usage_events"]}},
    {"sample": {"tiers": {"free": 50}}},
]


def _rows(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        attrs = {"url": f"/u/{i % 5}", "user.email": f"u{i % 3}@example.com" if i % 2 else "none",
                 "password": "hunter2" if i % 4 == 0 else None, "tenant.id": ["acme", "globex", HOSTILE[i % 3]][i % 3]}
        rows.append({"tenant": "decoder-set", "attrs": {k: v for k, v in attrs.items() if v is not None},
                     "tier": "free", "time": NOW - timedelta(minutes=90 * (i % 3))})
    return rows


def _chain():
    return build_chain(parse({"processors": CHAIN}))


def _same(a, b):
    assert a.kept.equals(b.kept)
    assert a.quarantined.equals(b.quarantined)
    assert a.stats == b.stats and a.sampled_out == b.sampled_out


@pytest.mark.parametrize("n", [1, 7, 200])
def test_a_chain_sharing_views_equals_processors_run_one_by_one(table, n):
    batches = [make_batch(table, _rows(n)) for _ in range(3)]
    chain, alone = _chain(), _chain()
    for batch in batches:
        shared = chain.process(table, batch)
        kept, stats, quarantined, sampled_out = batch, {}, [], 0
        for p in alone:  # each processor alone, no views: the reference
            res = p.process(table, kept)
            kept = res.kept
            quarantined.append(res.quarantined)
            sampled_out += res.sampled_out
            for k, v in res.stats.items():
                stats[k] = stats.get(k, 0) + v
            if kept.num_rows == 0:
                break
        assert shared.kept.equals(kept)
        assert shared.quarantined.num_rows == sum(q.num_rows for q in quarantined)
        assert dict(shared.stats) == stats and shared.sampled_out == sampled_out


def test_views_never_serve_a_stale_flattening_for_changed_data():
    a = make_batch("spans", [{"attrs": {"k": "1"}}, {"attrs": {"k": "2"}}])
    b = make_batch("spans", [{"attrs": {"k": "1"}}, {"attrs": {"k": "3"}}])
    views = maps.BatchViews()
    assert views.entries(a.column("attributes")) is views.entries(a.column("attributes"))
    assert views.entries(b.column("attributes")).values.to_pylist() == ["1", "3"]
    assert views.entries(a.column("attributes").slice(1)).values.to_pylist() == ["2"]


def test_derived_value_encoding_equals_a_fresh_one():
    col = make_batch("spans", [{"attrs": {"k": v, "j": "x"}} for v in ["a", "b", "a", "c"]]).column("attributes")
    e = maps.MapEntries.of(col)
    e.key_codes(), e.value_codes()
    new = maps.replace_at(e.values, np.array([0, 4]), pa.array(["b", "zz"]))
    keep = np.array([True, True, False, True, True, True, False, True])
    _, derived = e.derive(new, keep, changed=np.array([0, 4]))
    fresh = maps.MapEntries(derived.parent, derived.keys, derived.values, derived.row_null, derived.num_rows)
    for mine, ref in ((derived.value_codes(), fresh.value_codes()), (derived.key_codes(), fresh.key_codes())):
        d1, d2 = mine[1].to_pylist(), ref[1].to_pylist()
        assert [d1[c] if c >= 0 else None for c in mine[0]] == [d2[c] if c >= 0 else None for c in ref[0]]
        assert len(set(d1)) == len(d1)  # still one code per distinct value


def test_views_count_by_tenant_matches_the_group_by_with_nulls_and_hostile_ids():
    tenants = [None, "acme", HOSTILE[0], None, "acme", HOSTILE[3], ""]
    batch = make_batch("logs", [{"tenant": t} for t in tenants])
    assert maps.BatchViews().count_by_tenant(batch, "p", "kept") == count_by_tenant(batch, "p", "kept")


def test_byte_lengths_of_slices_chunks_and_nulls():
    arr = pa.chunked_array([pa.array(["ab", None, "ü"]).slice(1), pa.array(["", "xyz"])])
    assert maps.byte_lengths(arr).tolist() == [0, 2, 0, 3]


def _limited(dense_max: int, monkeypatch) -> list[list]:
    monkeypatch.setattr(limit_cardinality, "_DENSE_MAX", dense_max)
    rows = [{"tenant": t, "attrs": {"url": f"/{(i * 5) % 7}", "user": f"u{(i * 7) % 11}"},
             "time": NOW + timedelta(hours=i % 3)} for i, t in enumerate(["acme", HOSTILE[0]] * 30)]
    p = limit_cardinality.LimitCardinality(options={"max_values": 3, "retain_windows": 2})
    out = [p.process("spans", make_batch("spans", rows[k:k + 20])) for k in range(0, 60, 20)]
    return [[sorted(m) for m in r.kept.column("attributes").to_pylist()] for r in out] + [
        [sorted(r.stats.items()) for r in out]]


def test_limit_cardinality_dense_and_hashed_paths_agree(monkeypatch):
    assert _limited(0, monkeypatch) == _limited(1 << 24, monkeypatch)


@pytest.mark.parametrize("dense_max", [0, 1 << 24])
def test_limit_cardinality_admits_new_values_in_order_of_arrival(monkeypatch, dense_max):
    monkeypatch.setattr(limit_cardinality, "_DENSE_MAX", dense_max)
    values = ["/z", "/a", "/z", "/m", "/b", "/a", "/c"]
    res = limit_cardinality.LimitCardinality(options={"max_values": 3}).process(
        "spans", make_batch("spans", [{"attrs": {"url": v}} for v in values]))
    got = [dict(m)["url"] for m in res.kept.column("attributes").to_pylist()]
    assert got == ["/z", "/a", "/z", "/m", "__overflow__", "/a", "__overflow__"]


def test_chain_accepts_views_from_a_host():
    batch = make_batch("spans", [{"attrs": {"tenant.id": "acme"}}])
    views = maps.BatchViews()
    res = Chain(list(_chain())).process("spans", batch, views=views)
    assert res.kept.column("tenant_id").to_pylist() == ["acme"]
