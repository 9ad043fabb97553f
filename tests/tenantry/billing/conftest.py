"""Fixtures for billing tests: a warehouse and ledger entries written the way the ledger does."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pyarrow as pa
import pytest

from tenantry import config, schemas
from tenantry.warehouse import Warehouse

UTC = dt.timezone.utc


def day(d: str) -> dt.datetime:
    return dt.datetime.fromisoformat(d).replace(tzinfo=UTC)


def ledger_rows(rows: list[dict], run_id: str) -> pa.Table:
    """Ledger entries: each row gives tenant, meter, start (ISO day), quantity; optional end,
    dims, revision, kind, entry_id."""
    out = []
    for r in rows:
        start = day(r["start"]) if isinstance(r["start"], str) else r["start"]
        end = r.get("end") or start + dt.timedelta(days=1)
        end = day(end) if isinstance(end, str) else end
        dims = r.get("dims") or {}
        rev = r.get("revision", 0)
        out.append({
            "entry_id": r.get("entry_id") or f"{r['tenant']}|{r['meter']}|{start:%Y%m%d%H}|{json.dumps(dims, sort_keys=True)}|{rev}",
            "tenant_id": r["tenant"], "meter": r["meter"], "period_start": start, "period_end": end,
            "dimensions": list(dims.items()), "dimensions_key": json.dumps(dims, sort_keys=True),
            "quantity": Decimal(str(r["quantity"])), "unit": r.get("unit"), "event_count": r.get("event_count", 1),
            "revision": rev, "kind": r.get("kind", "usage"), "supersedes": None,
            "computed_at": r.get("computed_at", start), "pipeline_version": "test", "ingest_batch": run_id,
        })
    cols = {f.name: [o[f.name] for o in out] for f in schemas.USAGE_LEDGER}
    arrays = []
    for f in schemas.USAGE_LEDGER:
        if pa.types.is_timestamp(f.type):
            arrays.append(pa.array(cols[f.name], pa.timestamp("us", tz="UTC")).cast(f.type))
        else:
            arrays.append(pa.array(cols[f.name], f.type))
    return pa.Table.from_arrays(arrays, schema=schemas.USAGE_LEDGER)


@pytest.fixture
def wh(tmp_path) -> Warehouse:
    return Warehouse.open(tmp_path / "wh")


@pytest.fixture
def write_ledger(wh):
    """write_ledger(rows, run_id=...) commits ledger entries as a ledger run would."""
    n = [0]

    def write(rows: list[dict], run_id: str | None = None) -> None:
        n[0] += 1
        run_id = run_id or f"ledger-test-{n[0]}"
        wh.write_part("usage_ledger", run_id, "part-0", ledger_rows(rows, run_id))
        wh.commit(run_id, inputs=[])

    return write


def make_config(data: dict) -> config.Config:
    return config.parse(data)
