"""Rating: the exact price of a quantity under a plan's price model.

Rounding rule (one rule, applied once): every amount is computed exactly with ``Decimal``, then
each invoice *line* is rounded to the currency's minor unit (2 decimals; 0 for zero-decimal
currencies such as JPY), half away from zero (``ROUND_HALF_UP``). Tier amounts inside a line are
shown unrounded; the invoice total is the sum of the rounded lines, so lines always add up to
the total. Quantities are kept to 9 decimals (the lake's ``decimal(38, 9)``), and prorated
included units are rounded to 9 decimals half-up before use, so the stored figures reproduce the
amount.

``included`` units are taken off first; the price model applies to the rest (the billable
quantity). A negative quantity (credits exceeding usage) bills nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal

from tenantry.billing.plans import Flat, Graduated, Package, PerUnit, Price, Volume

NINE = Decimal("0.000000001")
#: ISO 4217 currencies without a minor unit (amounts in whole units)
ZERO_DECIMAL = frozenset({"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf",
                          "ugx", "vnd", "vuv", "xaf", "xof", "xpf"})
#: currencies with three decimals
THREE_DECIMAL = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})


def minor_unit(currency: str) -> Decimal:
    c = currency.lower()
    if c in ZERO_DECIMAL:
        return Decimal(1)
    if c in THREE_DECIMAL:
        return Decimal("0.001")
    return Decimal("0.01")


def round_money(amount: Decimal, currency: str) -> Decimal:
    """The documented rounding rule: the currency's minor unit, half away from zero."""
    return amount.quantize(minor_unit(currency), rounding=ROUND_HALF_UP)


def q9(x: Decimal) -> Decimal:
    return x.quantize(NINE, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class Rated:
    """The rating of one meter's quantity: the unrounded amount and how it was reached."""

    billable: Decimal
    amount: Decimal  # exact, before the line is rounded
    unit_price: Decimal | None = None
    tiers: list[dict] = field(default_factory=list)

    def tiers_json(self) -> str | None:
        return json.dumps(self.tiers, separators=(",", ":")) if self.tiers else None


def text(x: Decimal) -> str:
    """Plain decimal text without an exponent or trailing zeros ("2.5", "10000")."""
    s = format(x, "f")
    return s.rstrip("0").rstrip(".") if "." in s else s


def _tier_row(i: int, up_to: Decimal | None, units: Decimal, unit_price: Decimal, flat: Decimal, amount: Decimal) -> dict:
    return {"tier": i, "up_to": None if up_to is None else text(up_to), "units": text(units),
            "unit_price": text(unit_price), "flat_fee": text(flat), "amount": text(amount)}


def graduated(qty: Decimal, p: Graduated) -> Rated:
    total, prev, rows = Decimal(0), Decimal(0), []
    for i, t in enumerate(p.tiers):
        if qty <= prev:
            break
        top = qty if t.up_to is None else min(qty, t.up_to)
        units = top - prev
        amount = units * t.unit_price + t.flat_fee
        rows.append(_tier_row(i, t.up_to, units, t.unit_price, t.flat_fee, amount))
        total += amount
        prev = top if t.up_to is None else t.up_to
    return Rated(qty, total, None, rows)


def volume(qty: Decimal, p: Volume) -> Rated:
    if qty <= 0:
        return Rated(qty, Decimal(0), None, [])
    for i, t in enumerate(p.tiers):
        if t.up_to is None or qty <= t.up_to:
            amount = qty * t.unit_price + t.flat_fee
            return Rated(qty, amount, t.unit_price, [_tier_row(i, t.up_to, qty, t.unit_price, t.flat_fee, amount)])
    raise AssertionError("the last tier has no end (validated in plans)")


def package(qty: Decimal, p: Package) -> Rated:
    if qty <= 0:
        return Rated(qty, Decimal(0), None, [])
    blocks = (qty / p.package_size).to_integral_value(rounding=ROUND_CEILING)
    amount = blocks * p.package_price
    return Rated(qty, amount, None, [{"packages": text(blocks), "package_size": text(p.package_size),
                                      "package_price": text(p.package_price), "amount": text(amount)}])


def rate(quantity: Decimal, price: Price, included: Decimal | None = None, fraction: Decimal = Decimal(1)) -> Rated:
    """Rate ``quantity`` of one meter for one plan segment.

    ``included`` overrides the price's own included units (pass the prorated figure);
    ``fraction`` prorates a flat fee. Nothing here rounds money: see :func:`round_money`.
    """
    inc = price.included if included is None else included
    if isinstance(price, Flat):
        return Rated(Decimal(0), price.amount * fraction, price.amount, [])
    billable = max(Decimal(0), quantity - inc)
    if isinstance(price, PerUnit):
        return Rated(billable, billable * price.unit_price, price.unit_price, [])
    if isinstance(price, Graduated):
        return graduated(billable, price)
    if isinstance(price, Volume):
        return volume(billable, price)
    if isinstance(price, Package):
        return package(billable, price)
    raise TypeError(f"unknown price model {type(price).__name__}")


def marginal_amount(price: Price, base: Decimal, extra: Decimal, included: Decimal | None = None) -> Decimal:
    """What ``extra`` units are worth on top of ``base`` units (flat fees are usage-free: 0)."""
    if isinstance(price, Flat) or extra == 0:
        return Decimal(0)
    return rate(base + extra, price, included).amount - rate(base, price, included).amount
