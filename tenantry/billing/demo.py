"""Billing in ``tenantry demo``: rate the demo period, export it, and reconcile.

:func:`run` picks the month of the newest ledger entry (or usage event), bills it, pushes the
ledger to the file exporter (no network; the outbox records it like any provider), and runs the
reconciliation, which finds the leaks planted in the demo data: tenants with a plan and usage but
no billing account, tenants active in telemetry without a plan, ledger entries a billing provider
has not acknowledged (the demo pushes nothing to Stripe), derived usage that differs from what
the app reported, and overage not on an invoice.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable

from tenantry.billing import exporters, lakeio
from tenantry.billing.invoice import bill
from tenantry.billing.outbox import run_export
from tenantry.billing.reconcile import reconcile
from tenantry.config import Config
from tenantry.warehouse import Warehouse


def demo_period(warehouse: str | Path, now: dt.datetime | None = None) -> str:
    """The month of the newest ledger entry, else of the newest usage event, else of ``now``."""
    wh = Warehouse.open(warehouse)
    got = lakeio.rows(
        wh,
        "select max(t) as t from (select epoch_us(max(period_start)::timestamptz) as t from {{ lake('usage_ledger') }} "
        "union all select epoch_us(max(time)::timestamptz) from {{ lake('usage_events') }})",
    )
    t = got[0]["t"] if got and got[0]["t"] is not None else None
    when = lakeio.from_us(t) if t is not None else (now or dt.datetime.now(dt.timezone.utc))
    return f"{when:%Y-%m}"


def run(warehouse: str | Path, cfg: Config, *, period: str | None = None,
        export_to: Iterable[str] = ("file",)) -> dict[str, Any]:
    """Bill, export and reconcile the demo period; a summary for the demo's report."""
    period = period or demo_period(warehouse)
    billed = bill(warehouse, cfg, period)
    exported = {}
    for target in export_to:
        kw = {"root": Path(warehouse).resolve()} if target == "file" else {}
        rep = run_export(warehouse, cfg, exporters.load(target, cfg.exports, **kw), period=period)
        exported[target] = {s: rep.count(s) for s in ("acknowledged", "rejected", "stale", "failed", "no_account")}
    rec = reconcile(warehouse, cfg, period)
    Warehouse.open(warehouse).build_views()
    return {
        "period": period,
        "invoice_totals": {t: f"{amt} {cur}" for t, (cur, amt) in sorted(billed.totals.items())},
        "lines_written": billed.lines_written,
        "invoice_files": [str(f) for f in billed.files],
        "exported": exported,
        "findings": rec.kinds(),
        "at_risk": {t: f"{amt} {cur or ''}".strip() for t, (cur, amt) in sorted(rec.at_risk().items())
                    if amt != Decimal(0)},
        "leaks": [(f["tenant_id"], f["kind"], f["meter"], f["provider"]) for f in rec.findings],
    }
