"""A misbehaving OTLP client for the demo: what the processors must catch.

It posts OTLP/JSON straight to the receiver, like a service with another SDK would: SQL- and
HTML-looking tenant ids, a tenant that is not in the catalog, a timestamp from 2001, a cardinality
burst (one tenant sending hundreds of distinct session ids), and a card number and a bearer token
in attributes.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request


def _span(tenant: str | None, name: str, start_ns: int, attrs: dict[str, str], idx: int) -> dict:
    attributes = [{"key": k, "value": {"stringValue": v}} for k, v in attrs.items()]
    if tenant is not None:
        attributes.append({"key": "tenant.id", "value": {"stringValue": tenant}})
    return {
        "traceId": os.urandom(16).hex(),
        "spanId": os.urandom(8).hex(),
        "name": name,
        "kind": 2,
        "startTimeUnixNano": str(start_ns),
        "endTimeUnixNano": str(start_ns + 5_000_000 + idx),
        "attributes": attributes,
    }


def planted_spans(now_ns: int | None = None) -> list[dict]:
    now = now_ns or time.time_ns()
    spans = [
        _span("acme'; DROP TABLE spans;--", "GET /api/items", now, {}, 0),
        _span("<script>alert(1)</script>", "GET /api/items", now, {}, 1),
        _span("evil-corp", "GET /api/items", now, {}, 2),  # not in the catalog
        _span("acme", "GET /api/items", 978_307_200 * 10**9, {}, 3),  # 2001-01-01: out of range
        _span("umbrella", "POST /api/pay", now, {
            "payment.card": "4111 1111 1111 1111",
            "http.request.header.authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
        }, 4),
    ]
    spans += [_span("hooli", "GET /api/items", now, {"session.id": f"s-{i:04d}"}, 10 + i) for i in range(120)]
    return spans


def send(endpoint: str) -> int:
    """POST the planted spans (and the security findings the SRE/security views must find: a
    cross-tenant access, a tenant mismatch, a brute-force burst) to ``endpoint``/v1/traces;
    returns how many were sent."""
    from tenantry.security import demo_planted_spans

    spans = planted_spans() + demo_planted_spans(time.time_ns() - 60 * 10**9)
    body = {
        "resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "rogue-batch-job"}}]},
            "scopeSpans": [{"scope": {"name": "rogue"}, "spans": spans}],
        }]
    }
    req = urllib.request.Request(
        endpoint.rstrip("/") + "/v1/traces", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"}, method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()
    return len(spans)
