"""``tenantry reconcile``: where revenue leaks, per tenant, priced with the tenant's plan.

Findings (one lake row each in ``leakage_findings``; the ``revenue_leakage`` view shows the
latest reconcile run of each period):

- ``telemetry_vs_app``: usage derived from telemetry (``source = 'derived'``) differs from what
  the app reported (``source = 'app'``) for the same tenant and meter;
- ``unexported`` / ``failed`` / ``rejected`` / ``stale``: ledger quantity a provider has not
  acknowledged, for every provider the tenant has a billing account at (and EventBridge / file
  when configured under ``exports:``);
- ``overage_not_billed``: usage above the included units that the committed invoice lines do
  not charge (the ledger grew after ``tenantry bill``, or the period was never billed);
- ``no_plan``: a tenant active in telemetry with no plan (or not in the catalog) for the period;
- ``no_billing_account``: a tenant with a plan and usage but no account at any billing provider.

``amount_at_risk`` is what the gap is worth under the tenant's plan: the rating of the full
quantity minus the rating without the gap (so tiers and included units are honoured); it is
null where there is no plan to price with, and negative where the tenant would be overcharged.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from tenantry.billing import lakeio
from tenantry.billing.exporters import ACCOUNT_KEYS
from tenantry.billing.invoice import existing_lines, ledger_usage, period_context, rate_tenant
from tenantry.billing.plans import Assignment, Flat, Plan
from tenantry.billing.rating import q9, rate, round_money
from tenantry.config import Config
from tenantry.schemas import PLATFORM, UNATTRIBUTED
from tenantry.warehouse import Warehouse

ZERO = Decimal(0)


@dataclass
class ReconcileReport:
    period: str
    run_id: str | None
    findings: list[dict] = field(default_factory=list)

    def at_risk(self) -> dict[str, tuple[str | None, Decimal]]:
        out: dict[str, tuple[str | None, Decimal]] = {}
        for f in self.findings:
            cur, tot = out.get(f["tenant_id"], (f["currency"], ZERO))
            out[f["tenant_id"]] = (cur or f["currency"], tot + (f["amount_at_risk"] or ZERO))
        return out

    def kinds(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for f in self.findings:
            out[f["kind"]] += 1
        return dict(out)


class _Pricer:
    """Prices a quantity gap of one tenant's meter with the plan in force at the period's end."""

    def __init__(self, a: Assignment | None, plans: dict[str, Plan], start: dt.datetime, end: dt.datetime):
        segs = [s for s in (a.segments(start, end) if a else []) if s.plan]
        self.plan = plans[segs[-1].plan] if segs else None
        self.trial = segs[-1].trial if segs else False

    @property
    def currency(self) -> str | None:
        return self.plan.currency if self.plan else None

    def gap(self, meter: str, total: Decimal, gap: Decimal) -> Decimal | None:
        if self.plan is None:
            return None
        price = self.plan.meters.get(meter)
        if price is None or isinstance(price, Flat) or self.trial or gap == 0:
            return ZERO
        return round_money(rate(total, price).amount - rate(total - gap, price).amount, self.plan.currency)


def _f(period: str, tenant: str, kind: str, *, meter=None, provider=None, expected=None, actual=None, gap=None,
       amount=None, currency=None, detail=None) -> dict:
    n = lambda v: None if v is None else q9(Decimal(v))  # noqa: E731
    return {"period": period, "tenant_id": tenant, "meter": meter, "provider": provider, "kind": kind,
            "expected_quantity": n(expected), "actual_quantity": n(actual), "gap_quantity": n(gap),
            "amount_at_risk": amount, "currency": currency, "detail": detail}


def expected_providers(cfg: Config, billing: dict[str, str]) -> list[str]:
    out = [p for p, keys in ACCOUNT_KEYS.items() if any(billing.get(k) for k in keys)]
    out += [p for p in ("eventbridge", "file") if p in cfg.exports]
    return out


def reconcile(warehouse: str | Path, cfg: Config, period: str, *, now: dt.datetime | None = None,
              source: str = "tenantry.yaml") -> ReconcileReport:
    ctx = period_context(cfg, period, source, now)
    start, end, plans, assigned, now = ctx.start, ctx.end, ctx.plans, ctx.assigned, ctx.now
    wh = Warehouse.open(warehouse)
    with wh.writer_lock():
        usage = ledger_usage(wh, start, end)
        pricers = {t: _Pricer(assigned.get(t), plans, start, end) for t in set(usage) | set(assigned)}
        out: list[dict] = []
        out += _telemetry_vs_app(wh, period, start, end, pricers)
        out += _exports(wh, cfg, period, start, end, pricers)
        out += _unbilled(wh, period, assigned, plans, usage, start, end)
        out += _unplanned(wh, cfg, period, assigned, plans, usage, start, end)
        run_id = None
        if out:
            run_id = f"reconcile-{period}-{now:%Y%m%dT%H%M%S%f}"
            for r in out:
                r.update(computed_at=now, ingest_batch=run_id)
            lakeio.commit_run(wh, run_id, {"leakage_findings": lakeio.table("leakage_findings", out)},
                              {"kind": "reconcile", "period": period, "findings": len(out)})
    return ReconcileReport(period, run_id, out)


def _telemetry_vs_app(wh, period, start, end, pricers) -> list[dict]:
    got = lakeio.rows(
        wh,
        "with ev as (select * from {{ lake('usage_events') }} where time >= $1 and time < $2 "
        "  qualify row_number() over (partition by tenant_id, event_id order by time, ingest_batch) = 1) "
        "select tenant_id, meter, sum(quantity) filter (where source = 'derived') as derived, "
        "  sum(quantity) filter (where source = 'app') as app from ev group by all "
        "having derived is not null and app is not null and derived <> app order by all",
        [start, end],
    )
    out = []
    for r in got:
        p = pricers.get(r["tenant_id"]) or _Pricer(None, {}, start, end)
        derived, app = Decimal(r["derived"]), Decimal(r["app"])
        gap = derived - app
        out.append(_f(period, r["tenant_id"], "telemetry_vs_app", meter=r["meter"], expected=derived, actual=app,
                      gap=gap, amount=p.gap(r["meter"], derived, gap), currency=p.currency,
                      detail="telemetry saw more than the app reported" if gap > 0 else
                      "the app reported more than telemetry saw"))
    return out


def _exports(wh, cfg, period, start, end, pricers) -> list[dict]:
    entries = lakeio.rows(
        wh,
        "with ledger as (select * from {{ lake('usage_ledger') }} where period_start >= $1 and period_start < $2 "
        "  qualify row_number() over (partition by entry_id order by computed_at, ingest_batch) = 1), "
        "ob as (select provider, entry_id, arg_max(status, pushed_at) as status, "
        "  bool_or(status = 'acknowledged') as acked from {{ lake('export_outbox') }} group by all) "
        "select l.tenant_id, l.meter, l.entry_id, l.quantity, ob.provider, "
        "  case when ob.acked then 'acknowledged' else ob.status end as status "
        "from ledger l left join ob using (entry_id) order by all",
        [start, end],
    )
    by_entry: dict[str, dict] = {}
    for r in entries:
        e = by_entry.setdefault(r["entry_id"], {"tenant": r["tenant_id"], "meter": r["meter"],
                                                "q": Decimal(r["quantity"]), "status": {}})
        if r["provider"]:
            e["status"][r["provider"]] = r["status"]
    gaps: dict[tuple, Decimal] = defaultdict(Decimal)
    totals: dict[tuple, Decimal] = defaultdict(Decimal)
    for e in by_entry.values():
        t = cfg.tenants.get(e["tenant"])
        totals[(e["tenant"], e["meter"])] += e["q"]
        if t is None:  # outside the catalog: never exported; reported as no_plan
            continue
        for prov in expected_providers(cfg, dict(t.billing)):
            status = e["status"].get(prov)
            if status == "acknowledged":
                continue
            gaps[(e["tenant"], e["meter"], prov, "unexported" if status is None else status)] += e["q"]
    out = []
    for (tenant, meter, prov, kind), gap in sorted(gaps.items()):
        p = pricers.get(tenant) or _Pricer(None, {}, start, end)
        total = totals[(tenant, meter)]
        out.append(_f(period, tenant, kind, meter=meter, provider=prov, expected=total, actual=total - gap, gap=gap,
                      amount=p.gap(meter, total, gap), currency=p.currency,
                      detail=f"ledger quantity not acknowledged by {prov} ({kind})"))
    return out


def _unbilled(wh, period, assigned, plans, usage, start, end) -> list[dict]:
    billed: dict[tuple, list[Decimal]] = defaultdict(lambda: [ZERO, ZERO])
    for ln in existing_lines(wh, period):
        if ln["line_type"] == "usage":
            b = billed[(ln["tenant_id"], ln["meter"])]
            b[0] += Decimal(ln["billable_quantity"])
            b[1] += Decimal(ln["amount"])
    out = []
    for tid, a in sorted(assigned.items()):
        fresh, _ = rate_tenant(a, plans, usage.get(tid, []), start, end)
        want: dict[str, list] = defaultdict(lambda: [ZERO, ZERO, None, ZERO])
        for ln in fresh:
            if ln["line_type"] == "usage" and ln["billable_quantity"] > 0:
                w = want[ln["meter"]]
                w[0] += ln["billable_quantity"]
                w[1] += ln["amount"]
                w[2] = ln["currency"]
                w[3] += ln["quantity"]
        for meter, (bq, amt, cur, qty) in sorted(want.items()):
            have_q, have_amt = billed.get((tid, meter), [ZERO, ZERO])
            if amt > have_amt:
                out.append(_f(period, tid, "overage_not_billed", meter=meter, expected=bq, actual=have_q,
                              gap=bq - have_q, amount=amt - have_amt, currency=cur,
                              detail=f"usage {qty} exceeds the included units; invoice lines charge {have_amt} of {amt}"))
    return out


def _unplanned(wh, cfg, period, assigned, plans, usage, start, end) -> list[dict]:
    active = {r["tenant_id"] for r in lakeio.rows(
        wh,
        "select tenant_id from {{ lake('usage_events') }} where time >= $1 and time < $2 union "
        "select tenant_id from {{ lake('usage_ledger') }} where period_start >= $1 and period_start < $2 union "
        "select tenant_id from {{ lake('sre_hourly_partials') }} where hour >= $1 and hour < $2",
        [start, end],
    )} - {UNATTRIBUTED, PLATFORM}
    out = []
    for tid in sorted(active):
        a = assigned.get(tid)
        segs = a.segments(start, end) if a else []
        planned = [s for s in segs if s.plan]
        if not planned:
            why = "not in the tenant catalog" if a is None else "no plan in force during the period"
            q = sum((q for _, _, q in usage.get(tid, [])), ZERO)
            out.append(_f(period, tid, "no_plan", expected=q, detail=f"active in telemetry but {why}"))
            continue
        t = cfg.tenants[tid]
        if not any(t.billing.get(k) for keys in ACCOUNT_KEYS.values() for k in keys):
            lines, _ = rate_tenant(a, plans, usage.get(tid, []), start, end)
            amount = sum((ln["amount"] for ln in lines), ZERO)
            out.append(_f(period, tid, "no_billing_account", amount=amount, currency=plans[planned[-1].plan].currency,
                          detail="active with a plan but no stripe_customer_id, aws_customer_account_id, "
                                 "aws_customer_identifier or amberflo_customer_id"))
    return out
