"""Service level objectives per tier, and SLA credits per plan.

``slos:`` in tenantry.yaml maps a tier (``tenants.<id>.tier``) to its objectives; ``default``
applies to every tenant whose tier has no entry (including tenants not in the catalog)::

    slos:
      gold:
        window_days: 30            # rolling window of the error budget (1-90, default 30)
        availability: 99.95        # % of requests (server/consumer spans) that are not errors
        latency:                   # % of requests no slower than threshold_ms
          threshold_ms: 250        # one of tenantry.schemas.LATENCY_LADDER_MS: 50 100 250 500 1000 2500 5000
          objective: 99.0
      default:
        availability: 99.5

An SLA is a plan's promise with money attached (``plans.<plan>.sla``)::

    plans:
      enterprise:
        sla: {availability: 99.9, credit_percent: 10}   # below 99.9% in a period: 10% credit

Requests are weighted by sample_weight. The SLO views (``tenant_slo_daily``, ``slo_burn_alerts``)
read the objectives from the lake table ``slo_targets`` that :func:`targets_table` builds from the
config, so the warehouse alone answers (``tenantry alerts`` needs no config).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from decimal import Decimal
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError, field_validator

from tenantry import schemas

DEFAULT_TIER = "default"
#: tenant_id of the slo_targets rows that apply to tenants without a tier-specific objective
ANY_TENANT = "*"
SLA_METER = "sla_credit"
SLA_UNIT = "percent_of_invoice"
SLA_DIMENSIONS = {"sla": "availability"}


class SloConfigError(ValueError):
    """``slos:`` or a plan's ``sla:`` is invalid; the message names the key and what was expected."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LatencyObjective(_Model):
    threshold_ms: float
    objective: float = Field(gt=0, lt=100)

    @field_validator("threshold_ms")
    @classmethod
    def _on_ladder(cls, v: float) -> float:
        if v not in schemas.LATENCY_LADDER_MS:
            ladder = ", ".join(str(t) for t in schemas.LATENCY_LADDER_MS)
            raise ValueError(f"{v:g} is not a counted threshold; use one of: {ladder}")
        return v


class TierSlo(_Model):
    window_days: int = Field(default=30, ge=1, le=90)
    availability: float | None = Field(default=None, gt=0, lt=100)
    latency: LatencyObjective | None = None


class Slos(RootModel[dict[str, TierSlo]]):
    """The whole ``slos:`` section: tier → objectives."""


class Sla(_Model):
    availability: float = Field(gt=0, lt=100)
    credit_percent: Decimal = Field(gt=0, le=100)


def _located(source: str, prefix: str, e: ValidationError) -> str:
    lines = []
    for err in e.errors():
        loc = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (SLO keys: window_days, availability, latency.threshold_ms, latency.objective)"
        lines.append(f"{source}: {loc}: {msg}")
    return "\n".join(lines)


def parse_slos(cfg: Any, source: str = "tenantry.yaml") -> dict[str, TierSlo]:
    """Validate ``Config.slos`` (or a raw mapping); raises :class:`SloConfigError` with located errors."""
    data = cfg.slos if hasattr(cfg, "slos") else cfg
    try:
        return Slos.model_validate(data or {}).root
    except ValidationError as e:
        raise SloConfigError(_located(source, "slos", e)) from None


def plan_slas(cfg: Any, source: str = "tenantry.yaml") -> dict[str, Sla]:
    """plan → :class:`Sla` for every plan that defines ``sla:``."""
    out = {}
    for plan, body in (cfg.plans or {}).items():
        if isinstance(body, dict) and body.get("sla") is not None:
            try:
                out[plan] = Sla.model_validate(body["sla"])
            except ValidationError as e:
                raise SloConfigError(_located(source, f"plans.{plan}.sla", e)) from None
    return out


def targets_table(cfg: Any, computed_at: dt.datetime, run_id: str = "config") -> pa.Table:
    """The ``slo_targets`` lake rows of a config: one per (tenant, SLI), plus ``*`` rows for ``default``.

    Write it with each run (``wh.write_part("slo_targets", run_id, "slo-targets", table)``); the
    views use the rows with the latest ``computed_at``.
    """
    slos = parse_slos(cfg)
    rows: list[dict] = []

    def add(tenant: str, tier: str | None, slo: TierSlo) -> None:
        if slo.availability is not None:
            rows.append({"tenant_id": tenant, "tier": tier, "slo": "availability", "sli": "availability",
                         "objective_pct": slo.availability, "threshold_ms": None, "window_days": slo.window_days})
        if slo.latency is not None:
            rows.append({"tenant_id": tenant, "tier": tier, "slo": f"latency_{slo.latency.threshold_ms:g}ms",
                         "sli": "latency", "objective_pct": slo.latency.objective,
                         "threshold_ms": slo.latency.threshold_ms, "window_days": slo.window_days})

    for tid, tenant in sorted(cfg.tenants.items()):
        slo = slos.get(tenant.tier or "") or slos.get(DEFAULT_TIER)
        if slo is not None:
            add(tid, tenant.tier, slo)
    if DEFAULT_TIER in slos:
        add(ANY_TENANT, DEFAULT_TIER, slos[DEFAULT_TIER])
    if not rows:
        return schemas.SLO_TARGETS.empty_table()
    for row in rows:
        row.update(computed_at=computed_at, ingest_batch=run_id)
    table = pa.Table.from_pylist(rows, schema=schemas.SLO_TARGETS)
    return schemas.conform("slo_targets", table)


def sla_evidence(wh, cfg: Any, period: tuple[dt.datetime, dt.datetime]) -> list[dict]:
    """Per tenant with an SLA plan and traffic in ``[start, end)``: requests, errors, availability,
    the promise and whether it was breached (what a credit entry rests on)."""
    start, end = period
    if not (start.tzinfo and end.tzinfo) or end <= start:
        raise SloConfigError(f"period {start!r}..{end!r}: need timezone-aware start < end")
    slas = plan_slas(cfg)
    tenants = {tid: t.plan for tid, t in cfg.tenants.items() if t.plan in slas}
    if not tenants:
        return []
    con = wh.connect()
    try:
        rows = con.execute(
            "select tenant_id, sum(requests), sum(errors) from stg_red_minutely_partials "
            "where minute >= ? and minute < ? and tenant_id in (select unnest(?)) group by tenant_id",
            [start, end, sorted(tenants)],
        ).fetchall()
    finally:
        con.close()
    out = []
    for tenant, requests, errors in sorted(rows):
        if not requests:
            continue
        sla = slas[tenants[tenant]]
        availability = 100.0 * (1.0 - errors / requests)
        out.append({"tenant_id": tenant, "plan": tenants[tenant], "period_start": start, "period_end": end,
                    "requests": requests, "errors": errors, "availability_pct": availability,
                    "sla_availability_pct": sla.availability, "credit_percent": sla.credit_percent,
                    "breached": availability < sla.availability})
    return out


def _entry_id(tenant: str, period_start: dt.datetime, dims_key: str, revision: int) -> str:
    # same recipe as tenantry/ledger/compute.py: sha256 of the key parts joined by \x1f
    epoch_ns = int(period_start.timestamp()) * 10**9 + period_start.microsecond * 1000
    raw = "\x1f".join([tenant, SLA_METER, str(epoch_ns), dims_key, str(revision)])
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def sla_credits(wh, cfg: Any, period: tuple[dt.datetime, dt.datetime], *, computed_at: dt.datetime | None = None,
                run_id: str = "sla", pipeline_version: str = "0.1.0") -> pa.Table:
    """USAGE_LEDGER rows (kind ``credit``, meter ``sla_credit``, quantity = credit percent of the
    period's invoice, unit ``percent_of_invoice``) for every tenant whose plan's SLA was breached
    in ``period``. The evidence is :func:`sla_evidence`; the entry id is deterministic (tenant,
    meter, period, dimensions ``{"sla": "availability"}``, revision 1), so recomputing a period
    yields the same id and the ledger can drop it as already written.
    """
    computed_at = computed_at or dt.datetime.now(dt.timezone.utc)
    dims_key = '{"sla":"availability"}'
    rows = []
    for ev in sla_evidence(wh, cfg, period):
        if not ev["breached"]:
            continue
        rows.append({
            "entry_id": _entry_id(ev["tenant_id"], ev["period_start"], dims_key, 1),
            "tenant_id": ev["tenant_id"], "meter": SLA_METER,
            "period_start": ev["period_start"], "period_end": ev["period_end"],
            "dimensions": list(SLA_DIMENSIONS.items()), "dimensions_key": dims_key,
            "quantity": Decimal(ev["credit_percent"]).quantize(Decimal("0.000000001")),
            "unit": SLA_UNIT, "event_count": int(round(ev["requests"])), "revision": 1, "kind": "credit",
            "supersedes": None, "computed_at": computed_at, "pipeline_version": pipeline_version,
            "ingest_batch": run_id,
        })
    if not rows:
        return schemas.USAGE_LEDGER.empty_table()
    return pa.Table.from_pylist(rows, schema=schemas.USAGE_LEDGER)
