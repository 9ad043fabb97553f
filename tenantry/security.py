"""Security signals per tenant: the ``security:`` settings, and the demo's planted findings.

The pipeline (``pipelines/transforms/security.py``) counts per (hour, tenant, service): auth failures,
authorization denials, rate-limit rejections, cross-tenant access and tenant mismatches, and keeps
the evidence spans. The views ``tenant_security_daily`` and ``security_findings`` add redactions
(``processor_stats``), telemetry without tenant (``telemetry_coverage``) and robust anomaly scores.

``security:`` in tenantry.yaml (every key optional; the defaults are OpenTelemetry semantic
conventions)::

    security:
      # attributes holding the HTTP response status, first present wins
      status_code_attributes: [http.response.status_code, http.status_code]
      auth_failure_status_codes: [401]
      authz_denied_status_codes: [403]
      rate_limited_status_codes: [429]
      # optional: an attribute that marks failed logins on non-HTTP entry points
      auth_failure_attribute: auth.outcome
      auth_failure_values: [failure, denied]
      # the tenant that owns the resource a span touched (cross-tenant access when it differs)
      resource_owner_attribute: tenant.resource_owner
      # set by tenantry's middleware when the caller's baggage claimed another tenant
      baggage_attribute: tenant.baggage_id

Anomalies (in the view ``security_findings``): per tenant and hour, the request volume, error rate
and auth failures are scored against the tenant's previous :data:`BASELINE_HOURS` hours with the
robust z-score ``(x - median) / max(1.4826 * MAD, floor)``; a point scoring at least
:data:`ANOMALY_SCORE` (and at least :data:`ANOMALY_MIN_COUNT` events) is a finding, once the
tenant has :data:`MIN_BASELINE_HOURS` hours of history.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from tenantry.context import BAGGAGE_ID_ATTRIBUTE

#: anomaly rule constants (mirrored in sql/marts/security_findings.sql; a test checks they agree)
BASELINE_HOURS = 24
MIN_BASELINE_HOURS = 6
ANOMALY_SCORE = 6.0
ANOMALY_MIN_COUNT = 20


class SecurityConfigError(ValueError):
    """``security:`` in tenantry.yaml is invalid; the message names the key and what was expected."""


class SecuritySettings(BaseModel):
    """The validated ``security:`` section (see the module docstring for the YAML)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status_code_attributes: tuple[str, ...] = ("http.response.status_code", "http.status_code")
    auth_failure_status_codes: tuple[int, ...] = (401,)
    authz_denied_status_codes: tuple[int, ...] = (403,)
    rate_limited_status_codes: tuple[int, ...] = (429,)
    auth_failure_attribute: str | None = None
    auth_failure_values: tuple[str, ...] = ("failure",)
    resource_owner_attribute: str = "tenant.resource_owner"
    baggage_attribute: str = BAGGAGE_ID_ATTRIBUTE

    @field_validator("status_code_attributes")
    @classmethod
    def _some_status_attribute(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("needs at least one attribute name (default: http.response.status_code)")
        return v

    @field_validator("auth_failure_status_codes", "authz_denied_status_codes", "rate_limited_status_codes")
    @classmethod
    def _http_codes(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        bad = [c for c in v if not 100 <= c <= 599]
        if bad:
            raise ValueError(f"not HTTP status codes (100-599): {bad}")
        return v

    @field_validator("status_code_attributes", "resource_owner_attribute", "baggage_attribute",
                     "auth_failure_attribute")
    @classmethod
    def _names(cls, v: Any) -> Any:
        for name in (v if isinstance(v, tuple) else [v]):
            if name is not None and not name.strip():
                raise ValueError("attribute names must not be empty")
        return v


def settings(cfg: Any, source: str = "tenantry.yaml") -> SecuritySettings:
    """The :class:`SecuritySettings` of a :class:`tenantry.config.Config` (or of a raw mapping).

    Raises :class:`SecurityConfigError` naming ``security.<key>`` and what was expected.
    """
    data = cfg.security if hasattr(cfg, "security") else (cfg or {})
    if not isinstance(data, dict):
        raise SecurityConfigError(f"{source}: security: expected a mapping, got {type(data).__name__}")
    try:
        return SecuritySettings.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key; known: " + ", ".join(SecuritySettings.model_fields)
            lines.append(f"{source}: security.{loc}: {msg}")
        raise SecurityConfigError("\n".join(lines)) from None


def _span(tenant: str, name: str, start_ns: int, attrs: dict[str, str], trace_id: str | None = None) -> dict:
    attributes = [{"key": k, "value": {"stringValue": v}} for k, v in {**attrs, "tenant.id": tenant}.items()]
    return {
        "traceId": trace_id or os.urandom(16).hex(),
        "spanId": os.urandom(8).hex(),
        "name": name,
        "kind": 2,  # server
        "startTimeUnixNano": str(start_ns),
        "endTimeUnixNano": str(start_ns + 4_000_000),
        "attributes": attributes,
    }


def demo_planted_spans(now_ns: int, tenant: str = "initech", victim: str = "globex",
                       burst: int = 200) -> list[dict]:
    """OTLP/JSON span dicts (server spans) that plant one of each security finding for ``tenant``.

    - one cross-tenant access: ``tenant`` reads a document owned by ``victim``;
    - one tenant mismatch: baggage claimed ``victim`` but the verified tenant is ``tenant``;
    - a brute-force burst: ``burst`` failed logins (HTTP 401) within a minute.

    The burst is an anomaly only against a baseline: the views need :data:`MIN_BASELINE_HOURS`
    earlier hours of ``tenant`` traffic (the demo's normal traffic, spread over past hours).
    """
    spans = [
        _span(tenant, "GET /api/documents/{id}", now_ns,
              {"http.route": "/api/documents/{id}", "http.response.status_code": "200",
               "tenant.resource_owner": victim}),
        _span(tenant, "GET /api/items", now_ns + 1_000_000,
              {"http.route": "/api/items", "http.response.status_code": "200", BAGGAGE_ID_ATTRIBUTE: victim}),
    ]
    spans += [
        _span(tenant, "POST /login", now_ns + i * 250_000_000,
              {"http.route": "/login", "http.response.status_code": "401", "user.name": f"admin{i % 7}"})
        for i in range(burst)
    ]
    return spans
