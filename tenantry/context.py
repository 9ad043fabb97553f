"""Tenant context: who the current work is for, carried as W3C baggage in the OpenTelemetry context.

``tenant_context`` puts ``tenant.id`` (and ``tenant.tier``, ``user.id`` when given) into the
baggage of the current OpenTelemetry context for the duration of a ``with`` block or a decorated
call. The tenant processors (:mod:`tenantry.sdk`) stamp those keys onto every span and log record
started inside, and the global W3C baggage propagator carries them to downstream services::

    with tenantry.tenant_context("acme", tier="pro", user_id="u-42"):
        handle_request()          # spans and logs carry tenant.id=acme

    @tenantry.tenant_context("acme")
    async def nightly_job(): ...  # works on sync and async functions

The context lives in ``contextvars``: asyncio tasks created inside inherit it, and so do threads
started with a copied context (``asyncio.to_thread``, ``contextvars.copy_context().run``); a bare
``threading.Thread`` or ``ThreadPoolExecutor.submit`` does not copy contextvars (Python's rule).
"""

from __future__ import annotations

import functools
import inspect
import unicodedata
from dataclasses import dataclass
from typing import Any, Callable, Mapping, TypeVar

from opentelemetry import baggage
from opentelemetry import context as otel_context

from tenantry.conventions import TENANT_ID_KEY, TENANT_ID_RE, TENANT_ID_RULE, TENANT_TIER_KEY, USER_ID_KEY

#: Longest tenant id, tier or user id accepted, in characters.
MAX_ID_LENGTH = 128
#: OpenTelemetry context key (not baggage: it must not propagate) under which the middleware
#: records a tenant id claimed by the caller's baggage that differs from the verified one.
BAGGAGE_MISMATCH_KEY = otel_context.create_key("tenantry.baggage_tenant_id")
#: Span attribute recording that claimed-but-overridden baggage tenant: a security signal.
BAGGAGE_ID_ATTRIBUTE = "tenant.baggage_id"

# Control (Cc), format (Cf: zero-width, bidi overrides), surrogate (Cs) and line/paragraph
# separators (Zl, Zp): invisible or log-splitting characters that make lookalike tenants.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})

F = TypeVar("F", bound=Callable[..., Any])


class TenantContextError(ValueError):
    """A tenant id (or tier, or user id) is not acceptable; the message says why."""


def validation_error(value: object, what: str = "tenant id") -> str | None:
    """Why ``value`` is not an acceptable id, or ``None`` when it is.

    Accepted: a non-empty ``str`` of at most :data:`MAX_ID_LENGTH` characters, without
    leading/trailing whitespace and without control, format or line-separator characters.
    A tenant id (``what == "tenant id"``) must also match
    :data:`~tenantry.conventions.TENANT_ID_RE`, the rule the pipeline enforces (ASCII letters,
    digits and ``. _ : @ -``); tiers and user ids may use any other printable (e.g. unicode)
    characters. The message never echoes a long value back.
    """
    if not isinstance(value, str):
        return f"{what} must be a str, got {type(value).__name__}"
    if not value or not value.strip():
        return f"{what} must not be empty"
    if len(value) > MAX_ID_LENGTH:
        return f"{what} is {len(value)} characters long; at most {MAX_ID_LENGTH} are allowed"
    if value != value.strip():
        return f"{what} {value!r} has leading or trailing whitespace"
    for ch in value:
        if unicodedata.category(ch) in _FORBIDDEN_CATEGORIES:
            return f"{what} {value!r} contains the control or invisible character U+{ord(ch):04X}"
    if what == "tenant id" and not TENANT_ID_RE.match(value):
        # the same rule the pipeline enforces: an id the app may use is one the pipeline accepts
        return f"{what} {value[:64]!r} is not valid: use {TENANT_ID_RULE}"
    return None


def is_valid_id(value: object, what: str = "tenant id") -> bool:
    """True when ``value`` is acceptable as ``what`` (tenant ids follow the stricter TENANT_ID_RE)."""
    return validation_error(value, what) is None


@dataclass(frozen=True)
class TenantInfo:
    """A resolved tenant: its id, and optionally its tier and the end user.

    Construction validates every field and raises :class:`TenantContextError` for a bad one.
    """

    tenant_id: str
    tier: str | None = None
    user_id: str | None = None

    def __post_init__(self) -> None:
        _check(self.tenant_id, "tenant id")
        if self.tier is not None:
            _check(self.tier, "tenant tier")
        if self.user_id is not None:
            _check(self.user_id, "user id")

    def attributes(self, include_user: bool = True) -> dict[str, str]:
        """The telemetry attributes for this tenant (only the keys that are set)."""
        attrs = {TENANT_ID_KEY: self.tenant_id}
        if self.tier is not None:
            attrs[TENANT_TIER_KEY] = self.tier
        if include_user and self.user_id is not None:
            attrs[USER_ID_KEY] = self.user_id
        return attrs


def _check(value: object, what: str) -> None:
    problem = validation_error(value, what)
    if problem is not None:
        raise TenantContextError(problem)


def with_tenant(info: TenantInfo, ctx: otel_context.Context | None = None) -> otel_context.Context:
    """``ctx`` (default: current) with the tenant keys set; unset keys are removed, so an inner
    tenant never inherits the outer (or a caller's forged) tier or user."""
    ctx = baggage.set_baggage(TENANT_ID_KEY, info.tenant_id, ctx)
    for key, value in ((TENANT_TIER_KEY, info.tier), (USER_ID_KEY, info.user_id)):
        ctx = baggage.set_baggage(key, value, ctx) if value is not None else baggage.remove_baggage(key, ctx)
    return ctx


def without_tenant(ctx: otel_context.Context | None = None) -> otel_context.Context:
    """``ctx`` (default: current) with every tenant key removed from its baggage."""
    for key in (TENANT_ID_KEY, TENANT_TIER_KEY, USER_ID_KEY):
        ctx = baggage.remove_baggage(key, ctx)
    return ctx


class tenant_context:  # noqa: N801 - used like contextlib's lower-case context managers
    """Context manager and decorator that makes ``tenant_id`` the current tenant.

    Raises :class:`TenantContextError` at construction for an invalid id, tier or user id: it is
    the app's own call, so the app sees the mistake. Nesting restores the outer tenant on exit.
    As a decorator every call attaches its own context, so one decorated function may run
    concurrently in many tasks or threads.
    """

    def __init__(self, tenant_id: str, tier: str | None = None, user_id: str | None = None) -> None:
        self.info = TenantInfo(tenant_id, tier, user_id)
        self._tokens: list[Any] = []

    def __enter__(self) -> TenantInfo:
        self._tokens.append(otel_context.attach(with_tenant(self.info)))
        return self.info

    def __exit__(self, *exc_info: object) -> None:
        otel_context.detach(self._tokens.pop())

    def __call__(self, func: F) -> F:
        info = self.info
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                token = otel_context.attach(with_tenant(info))
                try:
                    return await func(*args, **kwargs)
                finally:
                    otel_context.detach(token)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            token = otel_context.attach(with_tenant(info))
            try:
                return func(*args, **kwargs)
            finally:
                otel_context.detach(token)

        return wrapper  # type: ignore[return-value]


def tenant_from_baggage(values: Mapping[str, object]) -> TenantInfo | None:
    """The tenant named by a baggage mapping, or ``None`` when absent or invalid.

    Baggage may come from another process, so an invalid value yields ``None`` rather than an
    error: it is not the app's mistake.
    """
    tenant_id = values.get(TENANT_ID_KEY)
    if not is_valid_id(tenant_id):
        return None
    tier = values.get(TENANT_TIER_KEY)
    user_id = values.get(USER_ID_KEY)
    return TenantInfo(
        tenant_id,  # type: ignore[arg-type]
        tier if is_valid_id(tier, "tenant tier") else None,  # type: ignore[arg-type]
        user_id if is_valid_id(user_id, "user id") else None,  # type: ignore[arg-type]
    )


def current_tenant(ctx: otel_context.Context | None = None) -> TenantInfo | None:
    """The tenant of ``ctx`` (default: the current context), or ``None`` outside any tenant."""
    return tenant_from_baggage(baggage.get_all(ctx))


def tenant_attributes(include_user: bool = False) -> dict[str, str]:
    """Attributes to pass when recording a metric, so the point carries the current tenant.

    Metric points cannot be stamped after the fact (the SDK aggregates measurements by their
    attributes), so pass these explicitly::

        requests.add(1, {**tenantry.tenant_attributes(), "route": "/search"})

    Returns ``{}`` outside a tenant context (the point is then ``__unattributed__`` downstream).
    ``user.id`` is left out unless ``include_user=True``: one series per end user multiplies
    metric cardinality.
    """
    info = current_tenant()
    return info.attributes(include_user=include_user) if info is not None else {}
