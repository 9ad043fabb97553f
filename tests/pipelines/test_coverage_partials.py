"""coverage_partial: rows and unattributed rows per UTC day of one batch, checked against a count in
plain Python (times before 1970, missing times, the unattributed bucket, other time units)."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from pipelines.transforms.coverage import coverage_partial
from tenantry import schemas

DAY_NS = 86_400 * 10**9


def _reference(times, tenants):
    counts = Counter()
    for t, tenant in zip(times, tenants):
        day = dt.date(1970, 1, 1) + dt.timedelta(days=(t if t is not None else 0) // DAY_NS)
        counts[day, "n"] += 1
        counts[day, "u"] += tenant == schemas.UNATTRIBUTED
    days = sorted({d for d, _ in counts})
    return [(d, counts[d, "n"], counts[d, "u"]) for d in days]


@pytest.mark.parametrize("seed", range(20))
def test_counts_per_day_match_a_plain_count(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 2000))
    ns = rng.integers(-3 * DAY_NS, 30 * DAY_NS, n)
    times = [None if m else int(t) for t, m in zip(ns, rng.random(n) < 0.1)]
    tenants = list(rng.choice(["acme", schemas.UNATTRIBUTED, "t'; drop table spans; --", "ünï"], n))
    out = coverage_partial("spans", pa.table({"start_time": pa.array(times, schemas.TS), "tenant_id": tenants}))
    got = list(zip(out["day"].to_pylist(), out["total"].to_pylist(), out["unattributed"].to_pylist()))
    assert got == _reference(times, tenants)
    assert out["signal"].to_pylist() == ["spans"] * len(got)


def test_other_time_units_and_tables():
    times = [0, DAY_NS - 1, DAY_NS, 5 * DAY_NS + 7]
    t = pa.table({"time": pa.array([x // 1000 for x in times], pa.timestamp("us", tz="UTC")),
                  "tenant_id": ["a", schemas.UNATTRIBUTED, "a", "b"]})
    out = coverage_partial("logs", t)
    assert out.to_pylist() == [
        {"day": dt.date(1970, 1, 1), "signal": "logs", "total": 2, "unattributed": 1},
        {"day": dt.date(1970, 1, 2), "signal": "logs", "total": 1, "unattributed": 0},
        {"day": dt.date(1970, 1, 6), "signal": "logs", "total": 1, "unattributed": 0},
    ]


def test_no_partial_for_empty_batches_or_tables_without_time():
    assert coverage_partial("spans", schemas.empty("spans")) is None
    assert coverage_partial("quarantine", pa.table({"x": [1]})) is None
