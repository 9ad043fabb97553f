"""Explicit usage events: ``record_usage`` emits one OpenTelemetry log record per billable event.

::

    with tenantry.tenant_context("acme"):
        event_id = tenantry.record_usage("api.calls", 1, unit="{call}", route="/search")

The record goes through the global LoggerProvider with ``event_name="tenantry.usage"`` (the
LogRecord field and the ``event.name`` attribute) and these attributes:

- ``tenant.id``, ``tenant.tier``, ``user.id``: from the current tenant context;
- ``tenantry.usage.event_id``: the idempotency key (a uuid4 hex unless given: pass your own to
  make retries of the same business event count once);
- ``tenantry.usage.meter``, ``tenantry.usage.unit``;
- ``tenantry.usage.quantity``: an exact decimal string (``Decimal(repr(x))`` for floats, so
  ``0.1`` is ``"0.1"``; no exponent notation). The ledger stores ``decimal128(38, 9)``;
- ``tenantry.usage.dim.<name>``: each keyword dimension, stringified (``None`` is left out).

Usage is money, so the errors the app must see raise :class:`UsageError` instead of vanishing:
no tenant context, an empty meter, a quantity that is not a finite non-negative number, no
LoggerProvider configured (the no-op provider would swallow the event), or an emit that failed.
"""

from __future__ import annotations

import decimal
import numbers
import time
import uuid
from decimal import Decimal

from opentelemetry import _logs
from opentelemetry._logs import NoOpLoggerProvider, SeverityNumber
from opentelemetry._logs._internal import ProxyLoggerProvider

from tenantry.context import current_tenant, validation_error
from tenantry.conventions import (
    USAGE_DIMENSION_PREFIX,
    USAGE_EVENT_ID_KEY,
    USAGE_EVENT_NAME,
    USAGE_METER_KEY,
    USAGE_QUANTITY_KEY,
    USAGE_UNIT_KEY,
)

#: Instrumentation scope of usage log records.
SCOPE_NAME = "tenantry.usage"
EVENT_NAME_ATTRIBUTE = "event.name"
# decimal128(38, 9) holds 29 integer digits; fractional digits past 9 are rounded by the ledger,
# so a float's repr (up to 17 digits) is accepted, absurd exponents are not.
_MAX_INTEGER_DIGITS = 29
_MAX_FRACTION_DIGITS = 40


class UsageError(ValueError):
    """A usage event was not recorded; the message says why and what to do."""


def quantity_text(quantity: object) -> str:
    """``quantity`` as an exact, finite, non-negative decimal string, or :class:`UsageError`."""
    if isinstance(quantity, bool) or not isinstance(quantity, (numbers.Real, str, Decimal)):
        raise UsageError(
            f"usage quantity must be an int, float, Decimal or numeric string, got {type(quantity).__name__}"
        )
    if not isinstance(quantity, (Decimal, float, numbers.Integral, str)):
        # Fraction and other non-decimal reals have no exact decimal form
        raise UsageError(f"usage quantity {type(quantity).__name__} has no exact decimal form; pass a Decimal")
    try:
        if isinstance(quantity, Decimal):
            value = quantity
        elif isinstance(quantity, float):
            value = Decimal(repr(float(quantity)))  # float() drops numpy's repr wrapper
        elif isinstance(quantity, numbers.Integral):
            value = Decimal(int(quantity))
        else:
            value = Decimal(quantity.strip())
    except (decimal.InvalidOperation, ValueError):
        raise UsageError(f"usage quantity {str(quantity)[:40]!r} is not a number") from None
    if not value.is_finite():
        raise UsageError(f"usage quantity must be finite, got {value}")
    if value < 0:
        raise UsageError(f"usage quantity must not be negative, got {value}; record a credit instead")
    if value == 0:
        value = abs(value)  # no "-0"
    elif value.adjusted() > _MAX_INTEGER_DIGITS - 1 or value.as_tuple().exponent < -_MAX_FRACTION_DIGITS:
        # bounds the text too: "1e999999" must not become a million-digit string
        raise UsageError(
            f"usage quantity {str(value)[:40]} is out of range: at most {_MAX_INTEGER_DIGITS} integer "
            f"and {_MAX_FRACTION_DIGITS} fractional digits"
        )
    return format(value, "f")


def _check_name(value: object, what: str) -> None:
    problem = validation_error(value, what)
    if problem is not None:
        raise UsageError(problem)


def record_usage(
    meter: str,
    quantity: object,
    unit: str | None = None,
    event_id: str | None = None,
    **dimensions: object,
) -> str:
    """Emit one usage event for the current tenant and return its ``event_id``.

    Raises :class:`UsageError` (see the module docstring); nothing is emitted in that case.
    """
    _check_name(meter, "usage meter name")
    quantity_str = quantity_text(quantity)
    if unit is not None:
        _check_name(unit, "usage unit")
    if event_id is None:
        event_id = uuid.uuid4().hex
    else:
        _check_name(event_id, "usage event_id")
    tenant = current_tenant()
    if tenant is None:
        raise UsageError(
            f"record_usage({meter!r}) called outside a tenant context; "
            "wrap the call in `with tenantry.tenant_context(tenant_id):`"
        )
    provider = _logs.get_logger_provider()
    if _is_noop(provider):
        raise UsageError(
            "record_usage: no OpenTelemetry LoggerProvider is configured, so the usage event would be "
            "lost; call tenantry.configure() (or set an SDK LoggerProvider) first"
        )

    attributes: dict[str, str] = {
        EVENT_NAME_ATTRIBUTE: USAGE_EVENT_NAME,
        **tenant.attributes(),
        USAGE_EVENT_ID_KEY: event_id,
        USAGE_METER_KEY: meter,
        USAGE_QUANTITY_KEY: quantity_str,
    }
    if unit is not None:
        attributes[USAGE_UNIT_KEY] = unit
    for name, value in dimensions.items():
        if value is not None:
            attributes[USAGE_DIMENSION_PREFIX + name] = str(value)

    try:
        from tenantry import __version__

        provider.get_logger(SCOPE_NAME, __version__).emit(
            timestamp=time.time_ns(),
            severity_number=SeverityNumber.INFO,
            severity_text="INFO",
            event_name=USAGE_EVENT_NAME,
            attributes=attributes,
        )
    except Exception as exc:
        raise UsageError(
            f"record_usage({meter!r}): the usage event could not be emitted ({type(exc).__name__}); "
            f"retry with event_id={event_id!r} so it counts once"
        ) from exc
    return event_id


def _is_noop(provider: object) -> bool:
    # The proxy stands in until a real provider is set; it forwards to the no-op until then.
    return isinstance(provider, (NoOpLoggerProvider, ProxyLoggerProvider))
