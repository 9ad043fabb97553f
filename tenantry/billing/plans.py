"""Plans (``plans:`` in tenantry.yaml) and which plan a tenant is on when.

A plan has a currency, optional ``trial_days`` and ``minimum_commitment``, and a price per meter.
Price models: ``flat`` (a recurring fee per period, whatever the usage), ``per_unit``,
``graduated`` (each tier prices the units that fall in it), ``volume`` (the tier the quantity
reaches prices all units), ``package`` (a price per started block of ``package_size`` units).
``included`` units per period are free (the price applies to usage above them) and ``limit`` is
the plan's cap, reported by ``entitlement_status``. Prices are decimal strings (or integers):
floats are refused, so no price is ever off by a binary fraction.

.. code-block:: yaml

    plans:
      pro:
        currency: usd
        trial_days: 14
        minimum_commitment: "100.00"
        meters:
          platform:   {model: flat, amount: "49.00"}
          api_calls:
            model: graduated
            included: 1000
            limit: 1000000
            tiers:
              - {up_to: 10000, unit_price: "0.002"}
              - {up_to: null,  unit_price: "0.001", flat_fee: "5"}
          seats:      {model: per_unit, unit_price: "12.50"}
          storage_gb: {model: package, package_size: 10, package_price: "2.50"}
          events:     {model: volume, tiers: [{up_to: 1000, unit_price: "0.01"}, {up_to: null, unit_price: "0.008"}]}
    tenants:
      acme:
        plan: pro
        plan_start: "2026-01-01"          # no plan before this date
        trial_start: "2026-11-20"         # usage rated at zero for the plan's trial_days
        plan_changes:
          - {plan: enterprise, effective: "2026-11-15"}
          - {plan: null, effective: "2027-03-01"}   # cancelled from then on

Tiers: ``up_to`` is inclusive and ascending; the last tier has ``up_to: null`` (no end).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from tenantry.config import Config

UTC = dt.timezone.utc


class PlanError(ValueError):
    """``plans:`` or a tenant's plan assignment is invalid; the message says where and what."""


def _decimal(v: Any) -> Any:
    # a float has already lost the price the user wrote ("0.1" is not 0.1); make them quote it
    if isinstance(v, float):
        raise ValueError(f"write prices and quantities as quoted decimals (\"{v}\"), not floats")
    if isinstance(v, bool):
        raise ValueError("expected a decimal number, got a boolean")
    return v


Money = Annotated[Decimal, BeforeValidator(_decimal), Field(ge=0, allow_inf_nan=False)]
Qty = Annotated[Decimal, BeforeValidator(_decimal), Field(ge=0, allow_inf_nan=False)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Tier(_Model):
    up_to: Qty | None = None  # inclusive upper bound; null: no end
    unit_price: Money = Decimal(0)
    flat_fee: Money = Decimal(0)  # charged once when any unit falls in the tier (graduated) / when reached (volume)


class _Priced(_Model):
    included: Qty = Decimal(0)
    limit: Qty | None = None


class Flat(_Priced):
    model: Literal["flat"]
    amount: Money


class PerUnit(_Priced):
    model: Literal["per_unit"]
    unit_price: Money


class _Tiered(_Priced):
    tiers: list[Tier] = Field(min_length=1)

    @field_validator("tiers")
    @classmethod
    def _ascending(cls, tiers: list[Tier]) -> list[Tier]:
        prev = None
        for i, t in enumerate(tiers):
            last = i == len(tiers) - 1
            if t.up_to is None and not last:
                raise ValueError(f"tier {i}: only the last tier may have up_to: null")
            if last and t.up_to is not None:
                raise ValueError(f"tier {i}: the last tier must have up_to: null (no end), got {t.up_to}")
            if t.up_to is not None and prev is not None and t.up_to <= prev:
                raise ValueError(f"tier {i}: up_to {t.up_to} must be greater than the previous tier's {prev}")
            prev = t.up_to
        return tiers


class Graduated(_Tiered):
    model: Literal["graduated"]


class Volume(_Tiered):
    model: Literal["volume"]


class Package(_Priced):
    model: Literal["package"]
    package_size: Qty = Field(gt=0)
    package_price: Money


Price = Annotated[Union[Flat, PerUnit, Graduated, Volume, Package], Field(discriminator="model")]


class Plan(_Model):
    currency: str = "usd"
    trial_days: int = Field(default=0, ge=0, le=3660)
    minimum_commitment: Money = Decimal(0)
    meters: dict[str, Price] = Field(default_factory=dict)
    description: str | None = None
    #: the plan's SLA, validated by tenantry.slo.plan_slas (credits are ledger entries)
    sla: dict[str, Any] | None = None

    @field_validator("currency")
    @classmethod
    def _currency(cls, v: str) -> str:
        if not (len(v) == 3 and v.isascii() and v.isalpha()):
            raise ValueError(f"currency must be a 3-letter ISO 4217 code like usd, got {v!r}")
        return v.lower()


class PlanChange(_Model):
    plan: str | None
    effective: dt.datetime

    @field_validator("effective", mode="before")
    @classmethod
    def _date(cls, v: Any) -> Any:
        return parse_instant(v)


def parse_instant(v: Any) -> dt.datetime:
    """A date ("2026-11-15", midnight UTC) or an ISO datetime (naive means UTC) as aware UTC."""
    if isinstance(v, dt.datetime):
        d = v
    elif isinstance(v, dt.date):
        d = dt.datetime(v.year, v.month, v.day)
    elif isinstance(v, str):
        try:
            d = dt.datetime.fromisoformat(v.strip())
        except ValueError:
            raise ValueError(f"expected a date like 2026-11-15 or an ISO datetime, got {v!r}") from None
    else:
        raise ValueError(f"expected a date like 2026-11-15, got {type(v).__name__}")
    return d.replace(tzinfo=UTC) if d.tzinfo is None else d.astimezone(UTC)


def _format(source: str, prefix: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in (prefix, *e["loc"]) if p != "")
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling)"
        elif e["type"] == "union_tag_invalid":
            msg = "unknown price model; use one of flat, per_unit, graduated, volume, package"
        elif e["type"] == "union_tag_not_found":
            msg = "missing `model:` (flat, per_unit, graduated, volume or package)"
        lines.append(f"{source}: {loc}: {msg}")
    return "\n".join(lines)


def parse_plans(raw: dict[str, Any], source: str = "tenantry.yaml") -> dict[str, Plan]:
    """Validate ``plans:``; raises :class:`PlanError` naming the file and the dotted key."""
    out, errors = {}, []
    for name, body in (raw or {}).items():
        try:
            out[str(name)] = Plan.model_validate(body if body is not None else {})
        except ValidationError as e:
            errors.append(_format(source, f"plans.{name}", e))
    if errors:
        raise PlanError("\n".join(errors))
    return out


@dataclass(frozen=True)
class Segment:
    """A stretch of a billing period during which one plan (or none) applied."""

    start: dt.datetime
    end: dt.datetime
    plan: str | None
    trial: bool

    def fraction_of(self, period_start: dt.datetime, period_end: dt.datetime) -> Decimal:
        """The exact share of the period this segment covers (for prorating fees and included units)."""
        whole = (period_end - period_start).total_seconds()
        return Decimal(int((self.end - self.start).total_seconds())) / Decimal(int(whole))


@dataclass(frozen=True)
class Assignment:
    """A tenant's plan timeline: the plan in force from each instant on, and a trial window."""

    tenant_id: str
    changes: tuple[tuple[dt.datetime | None, str | None], ...]  # (from, plan); None: from the start of time
    trial: tuple[dt.datetime, dt.datetime] | None

    def plan_at(self, t: dt.datetime) -> str | None:
        current = None
        for start, plan in self.changes:
            if start is None or start <= t:
                current = plan
        return current

    def segments(self, start: dt.datetime, end: dt.datetime) -> list[Segment]:
        """The segments covering [start, end), split at plan changes and trial edges, merged
        where nothing changes."""
        cuts = {start, end}
        cuts.update(s for s, _ in self.changes if s is not None and start < s < end)
        if self.trial:
            cuts.update(t for t in self.trial if start < t < end)
        bounds = sorted(cuts)
        segs: list[Segment] = []
        for a, b in zip(bounds, bounds[1:]):
            plan = self.plan_at(a)
            trial = bool(self.trial and self.trial[0] <= a < self.trial[1])
            if segs and segs[-1].plan == plan and segs[-1].trial == trial:
                segs[-1] = Segment(segs[-1].start, b, plan, trial)
            else:
                segs.append(Segment(a, b, plan, trial))
        return segs


def assignments(cfg: Config, plans: dict[str, Plan], source: str = "tenantry.yaml") -> dict[str, Assignment]:
    """Each catalog tenant's plan timeline, validated; raises :class:`PlanError` naming the key."""
    out, errors = {}, []
    for tid, t in cfg.tenants.items():
        where = f"{source}: tenants.{tid}"
        changes: list[tuple[dt.datetime | None, str | None]] = []
        try:
            first = parse_instant(t.plan_start) if t.plan_start else None
        except ValueError as e:
            errors.append(f"{where}.plan_start: {e}")
            continue
        if t.plan is not None and t.plan not in plans:
            errors.append(f"{where}.plan: unknown plan {t.plan!r}; known plans: {', '.join(sorted(plans)) or '(none)'}")
        changes.append((first, t.plan))
        seen: set[dt.datetime] = set()
        for i, raw in enumerate(t.plan_changes):
            try:
                pc = PlanChange.model_validate(raw)
            except ValidationError as e:
                errors.append(_format(source, f"tenants.{tid}.plan_changes[{i}]", e))
                continue
            if pc.plan is not None and pc.plan not in plans:
                errors.append(f"{where}.plan_changes[{i}].plan: unknown plan {pc.plan!r}; known plans: "
                              f"{', '.join(sorted(plans)) or '(none)'}")
            if pc.effective in seen:
                errors.append(f"{where}.plan_changes[{i}].effective: two plan changes on {pc.effective:%Y-%m-%d %H:%M}")
            seen.add(pc.effective)
            changes.append((pc.effective, pc.plan))
        changes.sort(key=lambda c: (c[0] is not None, c[0] or dt.datetime.min.replace(tzinfo=UTC)))
        trial = None
        if t.trial_start:
            try:
                ts = parse_instant(t.trial_start)
            except ValueError as e:
                errors.append(f"{where}.trial_start: {e}")
                continue
            a = Assignment(tid, tuple(changes), None)
            plan = plans.get(a.plan_at(ts) or "")
            if plan is None:
                errors.append(f"{where}.trial_start: the tenant has no plan on {ts:%Y-%m-%d}, so no trial_days apply")
            elif plan.trial_days == 0:
                errors.append(f"{where}.trial_start: plan {a.plan_at(ts)!r} has no trial_days; set plans."
                              f"{a.plan_at(ts)}.trial_days or remove trial_start")
            else:
                trial = (ts, ts + dt.timedelta(days=plan.trial_days))
        out[tid] = Assignment(tid, tuple(changes), trial)
    if errors:
        raise PlanError("\n".join(errors))
    return out


def parse_period(period: str) -> tuple[dt.datetime, dt.datetime]:
    """``"2026-11"`` → [2026-11-01, 2026-12-01) in UTC. Raises :class:`PlanError` otherwise."""
    try:
        y, m = period.split("-")
        if len(y) != 4 or len(m) != 2:
            raise ValueError
        start = dt.datetime(int(y), int(m), 1, tzinfo=UTC)
    except ValueError:
        raise PlanError(f"--period: expected a month like 2026-11, got {period!r}") from None
    end = dt.datetime(start.year + (start.month == 12), start.month % 12 + 1, 1, tzinfo=UTC)
    return start, end
