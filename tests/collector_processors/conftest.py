"""Batch builders shared by the processor tests: every test runs over spans, logs and usage_events."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pyarrow as pa
import pytest

from tenantry import schemas

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=timezone.utc)
TABLES = ["spans", "logs", "usage_events"]
HOSTILE = [
    "acme'; DROP TABLE spans;--",
    "<script>alert(1)</script>",
    "ünïcødé-☃",
    "x" * 10_000,
    "__platform__",
    "acme\n",
    "",
]
_ids = itertools.count()


def map_column(table: str) -> str:
    """The attribute-like map of a table: ``dimensions`` for usage events."""
    return "dimensions" if table == "usage_events" else "attributes"


def make_batch(table: str, rows: list[dict]) -> pa.Table:
    """A conformed batch of ``table``. Row keys: tenant, attrs (dict or pairs), tier, time,
    plus any column name. Every required column gets a sensible default."""
    cols: dict[str, list] = {}
    mcol = map_column(table)
    built: list[dict] = []
    for r in rows:
        i = next(_ids)
        t = r.get("time", NOW)
        attrs = r.get("attrs", {})
        attrs = list(attrs.items()) if isinstance(attrs, dict) else attrs
        row = {
            "tenant_id": r.get("tenant", "acme"),
            "service_name": r.get("service_name", "checkout"),
            "ingest_batch": "test-batch",
            mcol: attrs,
        }
        if table == "spans":
            row.update(
                trace_id=f"{i:032x}", span_id=f"{i:016x}", name="GET /", status_code="ok",
                start_time=t, end_time=t + timedelta(milliseconds=5), duration_ms=5.0, sample_weight=1.0,
                tenant_tier=r.get("tier"),
            )
        elif table == "logs":
            row.update(time=t, observed_time=t, body=r.get("body", "hello"), tenant_tier=r.get("tier"))
        elif table == "usage_events":
            row.update(event_id=f"ev-{i}", meter="api_calls", quantity=Decimal("1"), time=t, source="app")
        skip = {"tenant", "attrs", "tier", "body"} | ({"time"} if table == "spans" else set())
        row.update({k: v for k, v in r.items() if k not in skip})
        built.append(row)
    for row in built:
        for k in row:
            cols.setdefault(k, [])
    for row in built:
        for k in cols:
            cols[k].append(row.get(k))
    schema = schemas.TABLES[table]
    arrays = {k: pa.array(v, schema.field(k).type) for k, v in cols.items()}
    if not rows:
        return schemas.empty(table)
    return schemas.conform(table, pa.table(arrays))


def attrs_of(batch: pa.Table, table: str) -> list[dict]:
    return [dict(m) if m is not None else None for m in batch.column(map_column(table)).to_pylist()]


def assert_accounted(result, n_in: int) -> None:
    assert result.kept.num_rows + result.quarantined.num_rows + result.sampled_out == n_in


@pytest.fixture(params=TABLES)
def table(request) -> str:
    return request.param
