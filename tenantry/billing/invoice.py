"""``tenantry bill``: rate a period's ledger into invoice line drafts, append-only.

For each catalog tenant and each plan segment of the period (plan changes and trials split a
month), the ledger balance per meter is rated with the plan (:mod:`tenantry.billing.rating`).
Flat fees, included units and the minimum commitment are prorated by the share of the period a
segment covers; usage is assigned to the segment its ledger ``period_start`` falls in. During a
trial every line is rated at zero but its quantity is still recorded.

Lines are never edited: a bill run compares the fresh rating with the lines already committed
for the period and appends only the difference (``kind = adjustment``), so the invoice of a
tenant is the sum of its lines. Re-billing unchanged input appends nothing. A run's id is a hash
of what it writes, so a run that crashed before its commit is redone under the same id.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from tenantry.billing import lakeio
from tenantry.billing.plans import Assignment, Flat, Plan, assignments, parse_period, parse_plans
from tenantry.billing.rating import q9, rate, round_money
from tenantry.config import Config
from tenantry.warehouse import Warehouse

ZERO = Decimal(0)
#: the fields that identify a line across re-ratings (the difference is taken per key)
KEY = ("tenant_id", "plan", "currency", "segment_start", "segment_end", "trial", "meter", "line_type")
SUMMED = ("quantity", "included", "billable_quantity", "amount")
CSV_COLUMNS = ("line_id", "period", "tenant_id", "plan", "currency", "segment_start", "segment_end", "trial",
               "meter", "line_type", "price_model", "quantity", "included", "billable_quantity", "unit_price",
               "tiers_json", "amount", "kind", "rated_at", "ingest_batch")


@dataclass
class BillResult:
    period: str
    run_id: str | None  # None: nothing changed, nothing written
    lines_written: int
    totals: dict[str, tuple[str, Decimal]]  # tenant → (currency, total of all its lines)
    files: list[Path] = field(default_factory=list)


def ledger_usage(wh: Warehouse, start: dt.datetime, end: dt.datetime) -> dict[str, list[tuple[dt.datetime, str, Decimal]]]:
    """tenant → [(period_start, meter, quantity)] of the committed ledger in [start, end)."""
    out: dict[str, list] = defaultdict(list)
    for r in lakeio.rows(
        wh,
        "select tenant_id, meter, epoch_us(period_start::timestamptz) as ps, sum(quantity) as quantity "
        "from {{ lake('usage_ledger') }} where period_start >= $1 and period_start < $2 group by all",
        [start, end],
    ):
        out[r["tenant_id"]].append((lakeio.from_us(r["ps"]), r["meter"], Decimal(r["quantity"])))
    return out


def _line(seg, plan_name: str, plan: Plan, meter: str, line_type: str, model: str, qty: Decimal,
          included: Decimal, billable: Decimal, unit_price, tiers_json, amount: Decimal) -> dict:
    return {"plan": plan_name, "currency": plan.currency, "segment_start": seg.start, "segment_end": seg.end,
            "trial": seg.trial, "meter": meter, "line_type": line_type, "price_model": model,
            "quantity": q9(qty), "included": q9(included), "billable_quantity": q9(billable),
            "unit_price": unit_price, "tiers_json": tiers_json, "amount": amount}


def rate_tenant(assignment: Assignment, plans: dict[str, Plan], usage: list[tuple[dt.datetime, str, Decimal]],
                start: dt.datetime, end: dt.datetime) -> tuple[list[dict], list[dict]]:
    """(lines, entitlements) of one tenant for [start, end): the full rating, not a difference."""
    lines, ents = [], []
    for seg in assignment.segments(start, end):
        if seg.plan is None:
            continue
        plan = plans[seg.plan]
        frac = seg.fraction_of(start, end)
        qty: dict[str, Decimal] = defaultdict(Decimal)
        for ps, meter, q in usage:
            if seg.start <= ps < seg.end:
                qty[meter] += q
        seg_lines = []
        for meter in sorted(set(qty) | {m for m, p in plan.meters.items() if isinstance(p, Flat)}):
            price, q = plan.meters.get(meter), qty.get(meter, ZERO)
            if price is None:  # usage the plan does not price: recorded, visible, zero
                seg_lines.append(_line(seg, seg.plan, plan, meter, "usage", "unpriced", q, ZERO, q, None, None, ZERO))
                continue
            included = q9(price.included * frac)
            r = rate(q, price, included, frac)
            amount = ZERO if seg.trial else round_money(r.amount, plan.currency)
            kind = "flat" if isinstance(price, Flat) else "usage"
            seg_lines.append(_line(seg, seg.plan, plan, meter, kind, price.model, q, included, r.billable,
                                   r.unit_price, r.tiers_json(), amount))
        for meter, price in plan.meters.items():
            ents.append({"tenant_id": assignment.tenant_id, "plan": seg.plan, "meter": meter,
                         "segment_start": seg.start, "segment_end": seg.end, "trial": seg.trial,
                         "included": q9(price.included * frac),
                         "limit": None if price.limit is None else q9(price.limit * frac)})
        if plan.minimum_commitment > 0 and not seg.trial:
            floor = round_money(plan.minimum_commitment * frac, plan.currency)
            total = sum((ln["amount"] for ln in seg_lines), ZERO)
            if total < floor:
                seg_lines.append(_line(seg, seg.plan, plan, "", "minimum_commitment", "minimum", ZERO, ZERO, ZERO,
                                       None, json.dumps({"minimum": str(floor), "rated": str(total)}), floor - total))
        lines.extend(seg_lines)
    for ln in lines:
        ln["tenant_id"] = assignment.tenant_id
    return lines, ents


def _key(r: dict) -> tuple:
    return tuple(r[k] for k in KEY)


def existing_lines(wh: Warehouse, period: str) -> list[dict]:
    return [
        {**r, "segment_start": lakeio.from_us(r["segment_start"]), "segment_end": lakeio.from_us(r["segment_end"]),
         "rated_at": lakeio.from_us(r["rated_at"])}
        for r in lakeio.rows(
            wh,
            "select * replace (epoch_us(segment_start::timestamptz) as segment_start, epoch_us(segment_end::timestamptz) as segment_end, "
            "epoch_us(rated_at::timestamptz) as rated_at) from {{ lake('invoice_lines') }} where period = $1 "
            "order by tenant_id, segment_start, meter, line_type, rated_at, line_id",
            [period],
        )
    ]


def differences(fresh: list[dict], existing: list[dict]) -> list[dict]:
    """Lines to append so that the committed lines sum to ``fresh`` per key (reversals included)."""
    have: dict[tuple, dict[str, Decimal]] = defaultdict(lambda: dict.fromkeys(SUMMED, ZERO))
    last: dict[tuple, dict] = {}
    for r in existing:
        k = _key(r)
        for c in SUMMED:
            have[k][c] += Decimal(r[c])
        last[k] = r
    want = {_key(r): r for r in fresh}
    out = []
    for k in sorted(set(want) | set(have), key=repr):
        new = want.get(k)
        old = have.get(k, dict.fromkeys(SUMMED, ZERO))
        base = new or last[k]
        delta = {c: (Decimal(new[c]) if new else ZERO) - old[c] for c in SUMMED}
        if all(v == 0 for v in delta.values()):
            continue
        out.append({**base, **delta, "kind": "adjustment" if k in have else "rating",
                    "price_model": base["price_model"],
                    "unit_price": new["unit_price"] if new else None,
                    "tiers_json": new["tiers_json"] if new else json.dumps({"reversed": True})})
    return out


@dataclass(frozen=True)
class PeriodContext:
    """What rating a period needs, validated once: its bounds, the plans and who is on which."""

    start: dt.datetime
    end: dt.datetime
    plans: dict
    assigned: dict
    now: dt.datetime


def period_context(cfg: Config, period: str, source: str, now: dt.datetime | None = None) -> PeriodContext:
    """Parse ``period`` and the plans; raises PlanError naming the key before anything is read."""
    start, end = parse_period(period)
    plans = parse_plans(cfg.plans, source)
    return PeriodContext(start, end, plans, assignments(cfg, plans, source),
                         now or dt.datetime.now(dt.timezone.utc))


def bill(warehouse: str | Path, cfg: Config, period: str, *, out_dir: str | Path | None = None,
         now: dt.datetime | None = None, source: str = "tenantry.yaml") -> BillResult:
    """Rate ``period`` ("2026-11") and append the differences to ``invoice_lines``; write the
    period's invoice as CSV and JSON under ``out_dir`` (default ``<warehouse>/exports/invoices``)."""
    ctx = period_context(cfg, period, source, now)
    start, end, plans, assigned, now = ctx.start, ctx.end, ctx.plans, ctx.assigned, ctx.now
    wh = Warehouse.open(warehouse)
    with wh.writer_lock():
        usage = ledger_usage(wh, start, end)
        fresh, ents = [], []
        for tid in sorted(assigned):
            lines, e = rate_tenant(assigned[tid], plans, usage.get(tid, []), start, end)
            fresh += lines
            ents += e
        existing = existing_lines(wh, period)
        delta = differences(fresh, existing)
        ent_changed = _entitlements_changed(wh, period, ents)
        run_id = None
        if delta or ent_changed:
            run_id = "bill-" + period + "-" + lakeio.digest(period, sorted(map(repr, delta)), sorted(map(repr, ents)), n=16)
            for d in delta:
                d.update(period=period, rated_at=now, ingest_batch=run_id,
                         line_id="il_" + lakeio.digest(period, _key(d), run_id))
            for e in ents:
                e.update(period=period, computed_at=now, ingest_batch=run_id)
            parts = {"invoice_lines": lakeio.table("invoice_lines", delta)}
            if ent_changed:
                parts["plan_entitlements"] = lakeio.table("plan_entitlements", ents)
            lakeio.commit_run(wh, run_id, parts, {"kind": "bill", "period": period, "lines": len(delta)})
        all_lines = existing + [dict(d) for d in delta]
    totals: dict[str, tuple[str, Decimal]] = {}
    for ln in all_lines:
        cur, tot = totals.get(ln["tenant_id"], (ln["currency"], ZERO))
        totals[ln["tenant_id"]] = (cur, tot + Decimal(ln["amount"]))
    files = write_files(Path(out_dir) if out_dir else wh.root / "exports" / "invoices", period, all_lines, totals)
    return BillResult(period, run_id, len(delta), totals, files)


def _entitlements_changed(wh: Warehouse, period: str, ents: list[dict]) -> bool:
    got = lakeio.rows(
        wh,
        "select tenant_id, plan, meter, epoch_us(segment_start::timestamptz) as s, epoch_us(segment_end::timestamptz) as e, trial, included, \"limit\" "
        "from {{ lake('plan_entitlements') }} where period = $1 "
        "qualify ingest_batch = last_value(ingest_batch) over (order by computed_at, ingest_batch "
        "rows between unbounded preceding and unbounded following)",
        [period],
    )
    have = {(r["tenant_id"], r["plan"], r["meter"], r["s"], r["e"], r["trial"], r["included"], r["limit"]) for r in got}
    want = {(e["tenant_id"], e["plan"], e["meter"], int(e["segment_start"].timestamp() * 1_000_000),
             int(e["segment_end"].timestamp() * 1_000_000), e["trial"], e["included"], e["limit"]) for e in ents}
    return have != want


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, dt.datetime):
        return v.isoformat().replace("+00:00", "Z")
    if isinstance(v, Decimal):
        return format(v.normalize(), "f") if v == v.to_integral_value() else format(v, "f").rstrip("0")
    return str(v)


def write_files(out: Path, period: str, lines: list[dict], totals: dict) -> list[Path]:
    """The period's invoice (every line, in order) as CSV and JSON, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for ln in lines:
        w.writerow([_fmt(ln.get(c)) for c in CSV_COLUMNS])
    doc = {"period": period, "tenants": [
        {"tenant_id": t, "currency": cur, "total": _fmt(tot),
         "lines": [{c: _fmt(ln.get(c)) for c in CSV_COLUMNS} for ln in lines if ln["tenant_id"] == t]}
        for t, (cur, tot) in sorted(totals.items())]}
    paths = []
    for name, text in ((f"invoice_lines-{period}.csv", buf.getvalue()),
                       (f"invoice-{period}.json", json.dumps(doc, indent=1, ensure_ascii=False))):
        p = out / name
        tmp = p.with_name(f".{name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, p)
        paths.append(p)
    return paths
