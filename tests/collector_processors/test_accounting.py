"""``input == kept + quarantined + sampled_out``, per table and per tenant, through the full chain."""

import hashlib
from collections import Counter
from datetime import timedelta

import pytest

from collector_processors.registry import build_chain
from tenantry import schemas
from tenantry.config import parse

from conftest import HOSTILE, NOW, make_batch

CONFIG = {
    "tenants": {"acme": {"tier": "free"}, "globex": {"tier": "pro"}},
    "processors": [
        {"attribute_tenant": {"policy": "quarantine"}},
        {"validate": {"max_past": None, "max_future": None}},
        {"redact": {"allowed_keys": ["url", "tenant.id", "v"], "on_denied_key": "quarantine"}},
        {"limit_cardinality": {"max_values": 2}},
        {"sample": {"tiers": {"free": 30, "pro": 60}}},
    ],
}


def _rows(table):
    rows = []
    for i in range(300):
        tenant = ["acme", "globex"][i % 2]
        r = {"tenant": tenant, "attrs": {"tenant.id": tenant, "url": f"/u/{i % 7}"}}
        if table == "usage_events":
            r = {"tenant": tenant, "attrs": {"url": f"/u/{i % 7}"}}
        if table == "spans":
            r["trace_id"] = hashlib.sha256(str(i // 3).encode()).hexdigest()[:32]  # 3 spans per trace
        rows.append(r)
    rows += [{"tenant": h, "attrs": {"tenant.id": h}} for h in HOSTILE]               # invalid / missing
    rows += [{"tenant": "newco", "attrs": {"tenant.id": "newco"}}]                     # unknown
    rows += [{"tenant": "acme", "attrs": {"tenant.id": "acme", "secret": "x"}}] * 3    # denied key
    rows += [{"tenant": "globex", "attrs": {"tenant.id": "globex", "v": "y" * 10_000}}] * 2  # too long
    rows += [{"tenant": "acme", "attrs": {"tenant.id": "acme", "v": "mail a@x.io"}}]   # redacted, kept
    return rows


def _expected_tenant(row, table):
    t = row["tenant"]
    return t if t in ("acme", "globex") else schemas.UNATTRIBUTED


@pytest.mark.parametrize("n_batches", [1, 3])
def test_every_row_is_kept_quarantined_or_sampled_out(table, n_batches):
    chain = build_chain(parse(CONFIG))
    rows = _rows(table)
    batch = make_batch(table, rows)
    step = -(-batch.num_rows // n_batches)
    kept = quarantined = sampled_out = 0
    stats = Counter()
    for off in range(0, batch.num_rows, step):
        res = chain.process(table, batch.slice(off, step))
        kept += res.kept.num_rows
        quarantined += res.quarantined.num_rows
        sampled_out += res.sampled_out
        stats.update(res.stats)
        assert set(res.quarantined.column("reason").to_pylist()) <= schemas.REASON_CODES
    assert kept + quarantined + sampled_out == len(rows)
    if table == "spans":
        assert sampled_out > 0

    # per tenant: what came in for a tenant = its final kept + every quarantine + sampled_out
    expected = Counter(_expected_tenant(r, table) for r in rows)
    last = chain.processors[-1].name
    got = Counter()
    for (tenant, proc, outcome), n in stats.items():
        if (proc == last and outcome == "kept") or outcome.startswith("quarantined:") or outcome == "sampled_out":
            got[tenant] += n
    assert got == expected


def test_quarantine_reasons_are_the_expected_ones(table):
    res = build_chain(parse(CONFIG)).process(table, make_batch(table, _rows(table)))
    reasons = Counter(res.quarantined.column("reason").to_pylist())
    assert reasons["unknown_tenant"] == 1
    assert reasons["denied_attribute"] == 3
    assert reasons["value_too_long"] == 2
    assert reasons["invalid_tenant_id"] + reasons["missing_tenant"] == len(HOSTILE)
    assert all(t == schemas.UNATTRIBUTED for t, r in zip(res.quarantined.column("tenant_id").to_pylist(), res.quarantined.column("reason").to_pylist()) if r.endswith("tenant") or r == "invalid_tenant_id")


def test_default_chain_keeps_every_well_formed_row(table):
    res = build_chain(parse({})).process(table, make_batch(table, [{"time": NOW - timedelta(minutes=5)}] * 10))
    # NOW is a fixed past date: the default 30d window may quarantine; both outcomes add up
    assert res.kept.num_rows + res.quarantined.num_rows == 10
