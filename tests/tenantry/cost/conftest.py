"""Hand-made cost inputs (FOCUS 1.x, AWS CUR 2.0 with split cost allocation, cost.csv) and a
warehouse whose telemetry drivers are known, so every expected allocation is computed by hand."""

from __future__ import annotations

import csv
import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tenantry import config, schemas
from tenantry.warehouse import Warehouse

DAY = dt.date(2026, 11, 3)
UTC = dt.timezone.utc


def ts(h: int = 0, day: dt.date = DAY) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(h), UTC)


FOCUS_HEADER = [
    "AvailabilityZone", "BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency",
    "BillingPeriodEnd", "BillingPeriodStart", "ChargeCategory", "ChargeClass", "ChargeDescription",
    "ChargeFrequency", "ChargePeriodEnd", "ChargePeriodStart", "CommitmentDiscountCategory",
    "CommitmentDiscountId", "CommitmentDiscountName", "CommitmentDiscountStatus", "CommitmentDiscountType",
    "ConsumedQuantity", "ConsumedUnit", "ContractedCost", "ContractedUnitPrice", "EffectiveCost",
    "InvoiceIssuerName", "ListCost", "ListUnitPrice", "PricingCategory", "PricingQuantity", "PricingUnit",
    "ProviderName", "PublisherName", "RegionId", "RegionName", "ResourceId", "ResourceName", "ResourceType",
    "ServiceCategory", "ServiceName", "ServiceSubcategory", "SkuId", "SkuMeter", "SkuPriceDetails",
    "SkuPriceId", "SubAccountId", "SubAccountName", "Tags",
]


def focus_row(service: str, cost: str, *, tags: dict | None = None, resource: str = "", category: str = "Usage",
              start: dt.datetime | None = None, end: dt.datetime | None = None, billed: str | None = None,
              currency: str = "USD") -> dict:
    start = start or ts(0)
    end = end or start + dt.timedelta(days=1)
    iso = lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    row = {k: "" for k in FOCUS_HEADER}
    row.update({
        "BilledCost": billed if billed is not None else cost, "EffectiveCost": cost, "ListCost": cost,
        "ContractedCost": cost, "BillingAccountId": "111122223333", "BillingCurrency": currency,
        "BillingPeriodStart": "2026-11-01T00:00:00Z", "BillingPeriodEnd": "2026-12-01T00:00:00Z",
        "ChargeCategory": category, "ChargePeriodStart": iso(start), "ChargePeriodEnd": iso(end),
        "InvoiceIssuerName": "AWS", "ProviderName": "AWS", "PublisherName": "AWS", "ServiceCategory": "Compute",
        "ServiceName": service, "ResourceId": resource, "Tags": json.dumps(tags) if tags else "",
    })
    return row


def write_focus_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=FOCUS_HEADER)
        w.writeheader()
        w.writerows(rows)
    return path


# -- AWS CUR 2.0 (column names and types as published for the COST_AND_USAGE_REPORT table) -------

MAP = pa.map_(pa.string(), pa.string())
CUR_SCHEMA = pa.schema([
    ("identity_line_item_id", pa.string()), ("identity_time_interval", pa.string()),
    ("bill_bill_type", pa.string()), ("bill_billing_entity", pa.string()),
    ("bill_billing_period_start_date", pa.timestamp("ms")), ("bill_billing_period_end_date", pa.timestamp("ms")),
    ("bill_payer_account_id", pa.string()), ("line_item_usage_account_id", pa.string()),
    ("line_item_line_item_type", pa.string()), ("line_item_usage_start_date", pa.timestamp("ms")),
    ("line_item_usage_end_date", pa.timestamp("ms")), ("line_item_product_code", pa.string()),
    ("line_item_usage_type", pa.string()), ("line_item_operation", pa.string()),
    ("line_item_resource_id", pa.string()), ("line_item_usage_amount", pa.float64()),
    ("line_item_currency_code", pa.string()), ("line_item_unblended_rate", pa.string()),
    ("line_item_unblended_cost", pa.float64()), ("line_item_blended_cost", pa.float64()),
    ("line_item_line_item_description", pa.string()), ("product_servicecode", pa.string()),
    ("product", MAP), ("pricing_public_on_demand_cost", pa.float64()), ("resource_tags", MAP),
    ("cost_category", MAP), ("split_line_item_actual_usage", pa.float64()),
    ("split_line_item_parent_resource_id", pa.string()),
    ("split_line_item_public_on_demand_split_cost", pa.float64()),
    ("split_line_item_public_on_demand_unused_cost", pa.float64()),
    ("split_line_item_reserved_usage", pa.float64()), ("split_line_item_split_cost", pa.float64()),
    ("split_line_item_split_usage", pa.float64()), ("split_line_item_split_usage_ratio", pa.float64()),
    ("split_line_item_unused_cost", pa.float64()),
])


def cur_row(i: int, service: str, cost: float, *, resource: str | None = None, tags: dict | None = None,
            line_type: str = "Usage", hour: int = 10, parent: str | None = None, split: float | None = None,
            unused: float | None = None) -> dict:
    start = ts(hour).replace(tzinfo=None)
    return {
        "identity_line_item_id": f"li-{i}", "identity_time_interval": "2026-11-03T10:00:00Z/2026-11-03T11:00:00Z",
        "bill_bill_type": "Anniversary", "bill_billing_entity": "AWS",
        "bill_billing_period_start_date": dt.datetime(2026, 11, 1), "bill_billing_period_end_date": dt.datetime(2026, 12, 1),
        "bill_payer_account_id": "111122223333", "line_item_usage_account_id": "111122223333",
        "line_item_line_item_type": line_type, "line_item_usage_start_date": start,
        "line_item_usage_end_date": start + dt.timedelta(hours=1), "line_item_product_code": service,
        "line_item_usage_type": "BoxUsage", "line_item_operation": "RunInstances", "line_item_resource_id": resource,
        "line_item_usage_amount": 1.0, "line_item_currency_code": "USD", "line_item_unblended_rate": "1",
        "line_item_unblended_cost": cost, "line_item_blended_cost": cost, "line_item_line_item_description": "x",
        "product_servicecode": service, "product": [("region", "us-east-1")], "pricing_public_on_demand_cost": cost,
        "resource_tags": list((tags or {}).items()), "cost_category": [],
        "split_line_item_actual_usage": None, "split_line_item_parent_resource_id": parent,
        "split_line_item_public_on_demand_split_cost": split, "split_line_item_public_on_demand_unused_cost": unused,
        "split_line_item_reserved_usage": None, "split_line_item_split_cost": split,
        "split_line_item_split_usage": None, "split_line_item_split_usage_ratio": None,
        "split_line_item_unused_cost": unused,
    }


def write_cur(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows, schema=CUR_SCHEMA), path)
    return path


# -- a warehouse with known telemetry drivers ---------------------------------------------------

# per tenant on DAY (server requests, total server time in ms)
SRE = {"acme": (30, 3000.0), "globex": (10, 6000.0), "__unattributed__": (10, 1000.0)}
TENANTS = {"acme": {}, "globex": {}, "initech": {}}


def _sre_partials() -> pa.Table:
    rows = [{"hour": ts(10), "tenant_id": t, "service_name": "shop", "requests": float(r), "errors": 0.0,
             "duration_sum_ms": d, "ingest_batch": "seed"} for t, (r, d) in SRE.items()]
    # another service, filtered out by driver_services: [shop]
    rows.append({"hour": ts(11), "tenant_id": "globex", "service_name": "batch", "requests": 1000.0, "errors": 0.0,
                 "duration_sum_ms": 1.0, "ingest_batch": "seed"})
    return schemas.conform("sre_hourly_partials", pa.Table.from_pylist(rows))


def _spans() -> pa.Table:
    cap = lambda u: json.dumps([json.dumps({"CapacityUnits": u, "TableName": "orders"})])  # noqa: E731
    rows = []
    for i, (t, nbytes, capacity, weight) in enumerate([
        ("acme", "100", cap(1.5), 2.0), ("acme", "50", cap(0.5), 1.0), ("globex", "250", cap(3.0), 1.0),
        ("globex", "not-a-number", "[not json", 1.0),
    ]):
        rows.append({"tenant_id": t, "service_name": "shop", "span_id": f"{i:016x}", "start_time": ts(12),
                     "end_time": ts(12), "duration_ms": 1.0, "sample_weight": weight, "ingest_batch": "seed",
                     "attributes": [("http.response.body.size", nbytes), ("aws.dynamodb.consumed_capacity", capacity)]})
    return schemas.conform("spans", pa.Table.from_pylist(rows, schema=pa.schema(
        [f for f in schemas.SPANS if f.name in rows[0]])))


def _ledger() -> pa.Table:
    """Daily ledger entries (tenant_usage_daily reads the ledger): llm_tokens acme 100, globex 400
    (a usage entry of 300 plus an adjustment of 100)."""
    day_end = ts(0) + dt.timedelta(days=1)
    rows = [{"entry_id": f"e{i}", "tenant_id": t, "meter": "llm_tokens", "period_start": ts(0), "period_end": day_end,
             "dimensions_key": "{}", "quantity": Decimal(q), "unit": "tokens", "event_count": 1, "revision": i,
             "kind": kind, "computed_at": ts(12), "pipeline_version": "test", "ingest_batch": "seed"}
            for i, (t, q, kind) in enumerate([("acme", "100", "usage"), ("globex", "300", "usage"),
                                              ("globex", "100", "adjustment")])]
    return schemas.conform("usage_ledger", pa.Table.from_pylist(rows, schema=pa.schema(
        [f for f in schemas.USAGE_LEDGER if f.name in rows[0]])))


@pytest.fixture
def warehouse(tmp_path) -> Warehouse:
    wh = Warehouse.open(tmp_path / "wh")
    wh.write_part("sre_hourly_partials", "seed", "p0", _sre_partials())
    wh.write_part("spans", "seed", "p0", _spans())
    wh.write_part("usage_ledger", "seed", "p0", _ledger())
    wh.commit("seed", ["seed"])
    wh.build_views()
    return wh


def make_cfg(cost: dict, tenants: dict | None = None) -> config.Config:
    return config.parse({"tenants": TENANTS if tenants is None else tenants, "cost": cost})
