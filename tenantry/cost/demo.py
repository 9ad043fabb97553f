"""A day of cloud cost for the demo's sample app (``demo-shop``), as a FOCUS 1.x CSV file.

``write_demo_cost(path, day)`` writes it; the ``cost:`` section in :data:`DEMO_COST_YAML` (also
in the demo's tenantry.yaml) allocates it: tagged storage goes directly to its tenant, compute by
each tenant's server time, the database by requests, support by fixed percentages, shared
networking is spread by allocated cost, and one line with a hostile tenant tag stays unallocated
(so the demo shows ``unallocated_cost`` with a reason). Amounts are fixed, so the file's content
and hash depend only on ``day``: ingesting it again is a no-op.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

DEMO_COST_YAML = """\
cost:
  tag_key: tenant
  shared_policy: spread
  rules:
    - name: tagged
      method: direct
    - name: compute
      match: {services: [Amazon Elastic Compute Cloud]}
      method: proportional
      driver: duration
    - name: database
      match: {services: [Amazon Relational Database Service]}
      method: proportional
      driver: requests
    - name: support
      match: {services: [AWS Support*]}
      method: fixed
      percentages: {acme: 40, globex: 40, __platform__: 20}
    - name: shared-network
      match: {services: [Amazon Virtual Private Cloud, AWS Data Transfer]}
      method: shared
"""

FOCUS_COLUMNS = [
    "BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency", "BillingPeriodEnd",
    "BillingPeriodStart", "ChargeCategory", "ChargeClass", "ChargeDescription", "ChargeFrequency",
    "ChargePeriodEnd", "ChargePeriodStart", "ConsumedQuantity", "ConsumedUnit", "ContractedCost",
    "EffectiveCost", "InvoiceIssuerName", "ListCost", "ProviderName", "PublisherName", "RegionId",
    "ResourceId", "ResourceName", "ServiceCategory", "ServiceName", "SkuId", "SubAccountId", "Tags",
]


def _iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _rows(day: dt.date) -> list[dict]:
    start = dt.datetime.combine(day, dt.time(), dt.timezone.utc)
    month = start.replace(day=1)
    next_month = (month + dt.timedelta(days=32)).replace(day=1)
    rows = []

    def add(hour: int | None, service: str, category: str, cost: str, resource: str | None, tags: dict | None, desc: str):
        s = start + dt.timedelta(hours=hour or 0)
        e = s + (dt.timedelta(hours=1) if hour is not None else dt.timedelta(days=1))
        rows.append({
            "BilledCost": cost, "EffectiveCost": cost, "ListCost": cost, "ContractedCost": cost,
            "BillingAccountId": "111122223333", "BillingAccountName": "demo-shop-prod", "BillingCurrency": "USD",
            "BillingPeriodStart": _iso(month), "BillingPeriodEnd": _iso(next_month),
            "ChargeCategory": "Usage", "ChargeClass": "", "ChargeDescription": desc, "ChargeFrequency": "Usage-Based",
            "ChargePeriodStart": _iso(s), "ChargePeriodEnd": _iso(e), "ConsumedQuantity": "1", "ConsumedUnit": "Hours",
            "InvoiceIssuerName": "Amazon Web Services, Inc.", "ProviderName": "AWS", "PublisherName": "Amazon Web Services, Inc.",
            "RegionId": "us-east-1", "ResourceId": resource or "", "ResourceName": "", "ServiceCategory": category,
            "ServiceName": service, "SkuId": "", "SubAccountId": "111122223333",
            "Tags": json.dumps(tags, separators=(",", ":")) if tags else "",
        })

    for h in range(24):
        add(h, "Amazon Elastic Compute Cloud", "Compute", "0.4160", "i-0demoshop0001", {"app": "demo-shop"}, "m6i.2xlarge hour")
        add(h, "Amazon Relational Database Service", "Databases", "0.2720", "db-demoshop", {"app": "demo-shop"}, "db.m6g.large hour")
    for tenant, cost in (("acme", "1.8400"), ("globex", "1.2100"), ("initech", "0.3300")):
        add(None, "Amazon Simple Storage Service", "Storage", cost, f"arn:aws:s3:::demo-shop-{tenant}",
            {"tenant": tenant, "app": "demo-shop"}, "S3 standard storage")
    add(None, "Amazon Virtual Private Cloud", "Networking", "1.0800", "nat-0demo", None, "NAT gateway hours")
    add(None, "AWS Data Transfer", "Networking", "0.5371", None, None, "data transfer out")
    add(None, "AWS Support (Business)", "Management and Governance", "3.3333", None, None, "support fee")
    # a planted hostile tag: kept as unallocated with reason invalid_tenant_tag, never guessed
    add(None, "Amazon Simple Storage Service", "Storage", "0.0700", "arn:aws:s3:::demo-shop-scratch",
        {"tenant": "x'; drop table spans; --"}, "S3 storage with a bad tag")
    return rows


def demo_total(day: dt.date) -> Decimal:
    """The file's total EffectiveCost (what the allocations must add up to)."""
    return sum((Decimal(r["EffectiveCost"]) for r in _rows(day)), Decimal(0))


def write_demo_cost(path: str | Path, day: dt.date | str) -> Path:
    """Write the demo's FOCUS cost file for ``day`` (a date or YYYY-MM-DD) to ``path``; returns it."""
    if isinstance(day, str):
        day = dt.date.fromisoformat(day)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=FOCUS_COLUMNS)
        w.writeheader()
        w.writerows(_rows(day))
    return path
