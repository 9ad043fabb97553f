"""The export outbox: every ledger entry pushed to a provider exactly once, nothing dropped.

State lives in the lake table ``export_outbox`` (one row per outcome; each export run commits
its rows with a manifest, so readers never lock). An export run:

1. takes the ledger entries of the period that have no final outcome (``acknowledged``,
   ``rejected``, ``stale``) for this provider: a re-run pushes nothing twice;
2. skips tenants outside the catalog or without an account at the provider (reconciliation
   reports them), leaves
   entries whose period is not over yet pending (``deferred``), and records what the provider
   would refuse (too old: ``stale``; malformed or negative: ``rejected``) without pushing it;
3. pushes the rest in batches within the provider's limits, retrying failed records and failed
   calls with exponential backoff and full jitter; what still fails is recorded ``failed``,
   reported per tenant, and pushed again by the next run;
4. commits outcomes every ``commit_every`` records and at the end.

A crash between a push and its commit is harmless: the next run pushes the same record with the
same idempotency key (derived from the ledger entry), which the provider deduplicates.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

from tenantry.billing import lakeio
from tenantry.billing.exporters import Entry, Exporter, FatalExportError, Outcome, Section, TransientError, parse_section
from tenantry.billing.plans import parse_period, parse_plans
from tenantry.config import Config
from tenantry.warehouse import Warehouse

log = logging.getLogger("tenantry.billing")
FINAL = ("acknowledged", "rejected", "stale")


class Retry(Section):
    """``exports.retry``: attempts per record within one run, and the backoff between them."""

    max_attempts: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    commit_every: int = 500

    def delay(self, attempt: int, rnd: random.Random) -> float:
        return rnd.uniform(0, min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1)))


@dataclass
class ExportReport:
    provider: str
    dry_run: bool
    runs: list[str] = field(default_factory=list)
    #: tenant → status → number of entries (acknowledged, rejected, stale, failed, deferred, no_account)
    per_tenant: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    #: (tenant, entry_id, reason) of everything not acknowledged
    problems: list[tuple[str, str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    payloads: list[dict[str, Any]] = field(default_factory=list)  # dry run only

    def count(self, status: str) -> int:
        return sum(c[status] for c in self.per_tenant.values())


def pending_entries(wh: Warehouse, provider: str, period: str | None) -> list[Entry]:
    """Committed ledger entries of ``period`` (all periods if None) without a final outcome."""
    where, params = "", [provider, list(FINAL)]
    if period:
        start, end = parse_period(period)
        where, params = "and period_start >= $3 and period_start < $4", params + [start, end]
    got = lakeio.rows(
        wh,
        "with ledger as (select * from {{ lake('usage_ledger') }} "
        "  qualify row_number() over (partition by entry_id order by computed_at, ingest_batch) = 1), "
        "done as (select distinct entry_id from {{ lake('export_outbox') }} "
        "  where provider = $1 and list_contains($2, status)) "
        "select entry_id, tenant_id, meter, epoch_us(period_start::timestamptz) as ps, epoch_us(period_end::timestamptz) as pe, quantity, unit, "
        "  map_keys(dimensions) as dk, map_values(dimensions) as dv, kind, revision "
        f"from ledger where entry_id not in (select entry_id from done) {where} "
        "order by tenant_id, period_start, meter, entry_id",
        params,
    )
    return [Entry(r["entry_id"], r["tenant_id"], r["meter"], lakeio.from_us(r["ps"]), lakeio.from_us(r["pe"]),
                  Decimal(r["quantity"]), r["unit"], dict(zip(r["dk"] or [], r["dv"] or [])), r["kind"], r["revision"])
            for r in got]


class _Recorder:
    """Buffers outcomes and commits them as export runs."""

    def __init__(self, wh: Warehouse, provider: str, report: ExportReport, now: Callable[[], dt.datetime], every: int):
        self.wh, self.provider, self.report, self.now, self.every = wh, provider, report, now, every
        self.rows: list[dict] = []
        self.stamp = now().strftime("%Y%m%dT%H%M%S%f")

    def add(self, e: Entry, status: str, reason: str | None, ref: str | None, attempts: int) -> None:
        self.rows.append({"provider": self.provider, "entry_id": e.entry_id, "idempotency_key": e.idempotency_key,
                          "tenant_id": e.tenant_id, "meter": e.meter, "period_start": e.period_start,
                          "period_end": e.period_end, "quantity": e.quantity, "status": status, "reason": reason,
                          "provider_ref": ref, "attempts": attempts, "pushed_at": self.now()})
        self.report.per_tenant[e.tenant_id][status] += 1
        if status != "acknowledged":
            self.report.problems.append((e.tenant_id, e.entry_id, f"{status}: {reason}"))
        if len(self.rows) >= self.every:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        run_id = f"export-{self.provider}-{self.stamp}-{len(self.report.runs):04d}"
        for r in self.rows:
            r["ingest_batch"] = run_id
        lakeio.commit_run(self.wh, run_id, {"export_outbox": lakeio.table("export_outbox", self.rows)},
                          {"kind": "export", "provider": self.provider, "records": len(self.rows)})
        self.report.runs.append(run_id)
        self.rows = []


def run_export(warehouse: str | Path, cfg: Config, exporter: Exporter, *, period: str | None = None,
               dry_run: bool = False, now: Callable[[], dt.datetime] | None = None,
               sleep: Callable[[float], None] = time.sleep, seed: int | None = None) -> ExportReport:
    """Push the pending ledger entries of ``period`` through ``exporter``; see the module doc."""
    parse_plans(cfg.plans)  # a bad config fails before anything is pushed
    retry = parse_section(Retry, cfg.exports.get("retry"), "retry")
    now = now or (lambda: dt.datetime.now(dt.timezone.utc))
    rnd = random.Random(seed)
    report = ExportReport(exporter.provider, dry_run)
    wh = Warehouse.open(warehouse)
    with wh.writer_lock():
        rec = _Recorder(wh, exporter.provider, report, now, max(1, retry.commit_every))
        ready: list[tuple[Entry, dict]] = []
        t0 = now()
        for e in pending_entries(wh, exporter.provider, period):
            tenant = cfg.tenants.get(e.tenant_id)
            # fail closed: a tenant outside the catalog is never billed anywhere (reconcile reports it)
            account = exporter.account(e.tenant_id, dict(tenant.billing)) if tenant else None
            if account is None:
                report.per_tenant[e.tenant_id]["no_account"] += 1
                continue
            v = exporter.check(e, t0)
            if v.warning:
                report.warnings.append(f"{e.tenant_id} {e.meter} {e.period_start:%Y-%m-%d %H:%M}: {v.warning}")
                log.warning("%s export: tenant %s: %s", exporter.provider, e.tenant_id, v.warning)
            if v.status == "deferred":
                report.per_tenant[e.tenant_id]["deferred"] += 1
            elif v.status in ("stale", "rejected"):
                if not dry_run:
                    rec.add(e, v.status, v.reason, None, 0)
                else:
                    report.per_tenant[e.tenant_id][v.status] += 1
            else:
                ready.append((e, exporter.build(e, account)))
        if dry_run:
            report.payloads = [exporter.describe(r) for _, r in ready]
            for e, _ in ready:
                report.per_tenant[e.tenant_id]["would_push"] += 1
            return report
        try:
            _push_all(exporter, ready, rec, retry, rnd, sleep)
        finally:
            rec.flush()
    for tenant, c in sorted(report.per_tenant.items()):
        if c["failed"]:
            log.warning("%s export: tenant %s: %d entries failed after %d attempts; the next run retries them",
                        exporter.provider, tenant, c["failed"], retry.max_attempts)
    return report


def _push_all(exporter: Exporter, ready: list[tuple[Entry, dict]], rec: _Recorder, retry: Retry,
              rnd: random.Random, sleep: Callable[[float], None]) -> None:
    records = [r for _, r in ready]
    batches = list(exporter.batches(records))
    for n, batch in enumerate(batches):
        todo, attempts, last_reason = list(batch), Counter(), {}
        for attempt in range(1, retry.max_attempts + 1):
            try:
                outcomes = exporter.push([records[i] for i in todo])
            except TransientError as err:
                outcomes = [Outcome("retry", str(err))] * len(todo)
            except FatalExportError as err:
                # nothing else can succeed: record this batch and the rest as failed (kept pending)
                for b in [todo] + batches[n + 1:]:
                    for i in b:
                        rec.add(ready[i][0], "failed", str(err), None, attempts[i] + (i in todo))
                raise
            if len(outcomes) != len(todo):
                raise RuntimeError(f"{exporter.provider} exporter returned {len(outcomes)} outcomes for {len(todo)} records")
            again = []
            for i, o in zip(todo, outcomes):
                attempts[i] += 1
                if o.status == "retry":
                    again.append(i)
                    last_reason[i] = o.reason
                else:
                    rec.add(ready[i][0], o.status, o.reason, o.provider_ref, attempts[i])
            todo = again
            if not todo:
                break
            if attempt < retry.max_attempts:
                sleep(retry.delay(attempt, rnd))
        for i in todo:
            rec.add(ready[i][0], "failed", last_reason.get(i), None, attempts[i])
