"""The demo's sample app: a small multi-tenant ASGI shop, instrumented with tenantry.

It is a real Starlette app behind ``TenantASGIMiddleware``, driven through its ASGI interface;
every span, log and usage event goes out through the real OpenTelemetry SDK and OTLP exporter.
Latency is simulated by giving spans explicit start and end times (so the demo runs in seconds),
and the traffic is seeded, so the same run gives the same figures.

Traffic is spread over the past 24 hours (span times are simulated; usage is recorded as it is
sent). Planted on purpose: ``globex`` fails ~8% of requests, ``initech`` has a slow search, a share
of requests carry no tenant, some attribute values hold personal data (e-mail addresses), and in the
last tenth of the day ``hooli`` becomes a noisy neighbour: its share of traffic jumps while every
other tenant's latency on the shared service triples.

Run: ``python -m tenantry.demo.app --endpoint http://127.0.0.1:4318 --requests 600``
"""

from __future__ import annotations

import argparse
from contextlib import nullcontext
import decimal
import logging
import random
import time

#: (tenant, tier, share of traffic)
TENANTS = (
    ("acme", "gold", 0.25),
    ("globex", "gold", 0.20),
    ("initech", "silver", 0.18),
    ("umbrella", "silver", 0.14),
    ("hooli", "bronze", 0.10),
    ("piedpiper", "bronze", 0.08),
)
UNATTRIBUTED_SHARE = 0.05
ROUTES = ("/api/items", "/api/search", "/api/export", "/api/ai/complete", "/api/orders")


NOISY_TENANT = "hooli"
NOISY_PHASE = 0.9  # the last 10% of the day


def build_app(tracer, rng: random.Random, clock: dict):
    """The ASGI app: each route records a server span (explicit times) and maybe usage."""
    from opentelemetry.trace import SpanKind, Status, StatusCode
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    import tenantry
    from tenantry.middleware import TenantASGIMiddleware

    log = logging.getLogger("demo.shop")

    def simulate(request, route: str):
        tenant = tenantry.current_tenant()
        tid = tenant.tenant_id if tenant else None
        latency_ms = rng.lognormvariate(2.6, 0.5)  # ~13 ms median
        if route == "/api/search" and tid == "initech":
            latency_ms *= 12  # planted: a slow tenant
        if clock["noisy"] and tid != NOISY_TENANT:
            latency_ms *= 3  # planted: the noisy neighbour degrades everyone else
        failed = rng.random() < (0.08 if tid == "globex" else 0.01)
        start = clock["now_ns"]
        # the signed-in end user of this request: user.id on every span and usage event below
        user = tenantry.tenant_context(tid, user_id=f"user-{rng.randint(1, 12 + len(tid) * 3)}") if tid else nullcontext()
        with user:
            return serve(route, tid, start, latency_ms, failed)

    def serve(route, tid, start, latency_ms, failed):
        span = tracer.start_span(f"GET {route}", kind=SpanKind.SERVER, start_time=start)
        span.set_attribute("http.request.method", "GET")
        span.set_attribute("http.route", route)
        span.set_attribute("http.response.status_code", 500 if failed else 200)
        if rng.random() < 0.1:
            span.set_attribute("enduser.email", f"user{rng.randint(1, 99)}@example.com")  # PII on purpose
        # a child database call
        from opentelemetry import trace as t

        ctx = t.set_span_in_context(span)
        db = tracer.start_span("SELECT items", kind=SpanKind.CLIENT, context=ctx, start_time=start + 1_000_000)
        db.set_attribute("db.system", "postgresql")
        db.end(end_time=start + int(latency_ms * 0.6 * 1e6))
        if failed:
            span.set_status(Status(StatusCode.ERROR, "upstream failed"))
            log.error("request failed on %s", route)
        if tid:
            if route == "/api/export":
                tenantry.record_usage("export_rows", rng.randint(100, 5000), unit="rows", format="csv")
            elif route == "/api/ai/complete":
                tenantry.record_usage("llm_tokens", rng.randint(200, 4000), unit="tokens",
                                      model=rng.choice(["small", "large"]))
            elif route == "/api/orders":
                amount = decimal.Decimal(rng.randint(100, 99999)) / 100
                tenantry.record_usage("order_value", amount, unit="usd")
        span.end(end_time=start + int(latency_ms * 1e6))
        return JSONResponse({"ok": not failed}, status_code=500 if failed else 200)

    routes = [Route(r, (lambda r_: (lambda request: simulate(request, r_)))(r)) for r in ROUTES]
    return TenantASGIMiddleware(Starlette(routes=routes))


def drive(n_requests: int, seed: int, endpoint: str, live_seconds: float | None = None) -> dict[str, int]:
    """Send ``n_requests`` through the app (spread over the past day), or with ``live_seconds``
    keep sending in real time for that long; returns requests sent per tenant."""
    import tenantry
    from opentelemetry import trace
    from opentelemetry.sdk._logs import LoggingHandler
    from starlette.testclient import TestClient

    providers = tenantry.configure(service_name="demo-shop", endpoint=endpoint)
    logging.getLogger("demo").addHandler(LoggingHandler())
    logging.getLogger("demo").setLevel(logging.INFO)
    rng = random.Random(seed)
    tracer = trace.get_tracer("tenantry.demo")
    clock = {"now_ns": 0, "noisy": False}
    client = TestClient(build_app(tracer, rng, clock), raise_server_exceptions=True)
    sent: dict[str, int] = {}
    weights = [share for _, _, share in TENANTS] + [UNATTRIBUTED_SHARE]
    noisy_weights = [0.6 if t == NOISY_TENANT else share for t, _, share in TENANTS] + [UNATTRIBUTED_SHARE]
    day_ns = 86_400 * 10**9
    start_ns = time.time_ns() - day_ns
    deadline = time.monotonic() + live_seconds if live_seconds else None
    i = 0
    while (i < n_requests) if deadline is None else (time.monotonic() < deadline):
        if deadline is None:
            clock["now_ns"] = start_ns + i * day_ns // n_requests
            clock["noisy"] = i >= NOISY_PHASE * n_requests
        else:
            clock["now_ns"] = time.time_ns()
            time.sleep(0.02)  # about 50 requests a second
            if i % 250 == 0:
                providers.force_flush(5_000)  # keep the pipeline fed while live
        i += 1
        pick = rng.choices(range(len(weights)), noisy_weights if clock["noisy"] else weights)[0]
        headers = {}
        tenant = None
        if pick < len(TENANTS):
            tenant, _tier, _ = TENANTS[pick]
            headers["X-Tenant-ID"] = tenant
        client.get(rng.choice(ROUTES), headers=headers)
        sent[tenant or "__unattributed__"] = sent.get(tenant or "__unattributed__", 0) + 1
    providers.force_flush(10_000)
    providers.shutdown()
    return sent


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--endpoint", required=True, help="OTLP/HTTP base URL of the receiver")
    ap.add_argument("--requests", type=int, default=600)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--live", type=float, default=None, help="send in real time for this many seconds")
    args = ap.parse_args(argv)
    sent = drive(args.requests, args.seed, args.endpoint, args.live)
    print(" ".join(f"{k}={v}" for k, v in sorted(sent.items())))


if __name__ == "__main__":
    main()
