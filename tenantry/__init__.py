"""tenantry: tenant-aware observability and metering.

Apps import this package to put tenant context on every span, log, metric and usage event::

    import tenantry

    tenantry.configure("checkout")                       # OTLP exporters + tenant stamping
    with tenantry.tenant_context("acme", tier="pro"):
        ...                                              # spans and logs carry tenant.id=acme
        tenantry.record_usage("api.calls", 1, route="/search")
        requests_counter.add(1, tenantry.tenant_attributes())

Middleware lives in :mod:`tenantry.middleware`, resolvers in :mod:`tenantry.resolvers`.
``import tenantry`` stays cheap: the SDK set-up (exporters, providers) is imported on first use.
"""

from typing import Any

from tenantry.context import (
    TenantContextError,
    TenantInfo,
    current_tenant,
    tenant_attributes,
    tenant_context,
)
from tenantry.usage import UsageError, record_usage

__version__ = "0.1.0"

# Loaded on first access (PEP 562): they pull in the OpenTelemetry SDK.
_LAZY = {
    "configure": "tenantry.sdk",
    "TenantryProviders": "tenantry.sdk",
    "TenantSpanProcessor": "tenantry.sdk",
    "TenantLogRecordProcessor": "tenantry.sdk",
}

__all__ = [
    "TenantContextError",
    "TenantInfo",
    "TenantLogRecordProcessor",
    "TenantSpanProcessor",
    "TenantryProviders",
    "UsageError",
    "__version__",
    "configure",
    "current_tenant",
    "record_usage",
    "tenant_attributes",
    "tenant_context",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tenantry' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
