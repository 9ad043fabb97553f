"""End to end: real SDK + OTLP exporter → real receiver → Beam pipeline → DuckDB views, exact counts."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from decimal import Decimal

import pytest

from pipelines.batch import run_batch
from tenantry import querying
from tenantry.receiver import Receiver

pytestmark = pytest.mark.e2e

# per tenant: (server requests, of which errors, usage events of meter "tokens" with 0.1 each)
PLAN = {"acme": (40, 3, 7), "globex": (25, 0, 4), "initech": (10, 10, 0)}
UNATTRIBUTED_REQUESTS = 6

APP = textwrap.dedent(
    """
    import sys, tenantry
    from decimal import Decimal
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
    plan = {plan!r}
    providers = tenantry.configure(service_name="e2e-app", endpoint=sys.argv[1])
    tracer = trace.get_tracer("e2e")
    for tenant, (requests, errors, usage) in plan.items():
        with tenantry.tenant_context(tenant, tier="gold"):
            for i in range(requests):
                with tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER) as span:
                    with tracer.start_as_current_span("db", kind=SpanKind.CLIENT):
                        pass
                    if i < errors:
                        span.set_status(Status(StatusCode.ERROR))
            for i in range(usage):
                tenantry.record_usage("tokens", "0.1", unit="tokens", model="m1")
    for i in range({unattributed}):
        with tracer.start_as_current_span("GET /health", kind=SpanKind.SERVER):
            pass
    providers.force_flush(10000)
    providers.shutdown()
    """
)


@pytest.fixture
def landed(tmp_path):
    landing = tmp_path / "landing"
    with Receiver(landing, http_listen="127.0.0.1:0", grpc_listen=None) as rec:
        script = APP.format(plan=PLAN, unattributed=UNATTRIBUTED_REQUESTS)
        proc = subprocess.run(
            [sys.executable, "-c", script, f"http://127.0.0.1:{rec.http_port}"],
            capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
    return landing


def _q(wh, sql):
    return querying.run(str(wh), sql).rows


def test_counts_from_the_sdk_arrive_exactly_in_the_views(landed, tmp_path):
    wh = tmp_path / "wh"
    report = run_batch([landed], wh)
    assert report.committed and report.balanced

    sre = dict(_q(wh, "select tenant_id, sum(requests)::bigint from tenant_sre_hourly group by 1"))
    assert sre == {**{t: p[0] for t, p in PLAN.items()}, "__unattributed__": UNATTRIBUTED_REQUESTS}
    errors = dict(_q(wh, "select tenant_id, sum(errors)::bigint from tenant_sre_hourly group by 1"))
    assert {t: errors[t] for t in PLAN} == {t: p[1] for t, p in PLAN.items()}

    usage = {(t, m): (q, n) for t, m, q, n in _q(wh, "select tenant_id, meter, sum(quantity), sum(event_count) "
                                                    "from tenant_usage_daily group by 1, 2")}
    for tenant, (requests, _e, events) in PLAN.items():
        assert usage[(tenant, "requests")] == (Decimal(requests), requests)
        if events:
            # exact decimals: 7 x 0.1 is 0.7, not 0.7000000000000001
            assert usage[(tenant, "tokens")] == (Decimal("0.1") * events, events)

    spans_total = sum(2 * p[0] for p in PLAN.values()) + UNATTRIBUTED_REQUESTS
    cov = _q(wh, "select signal, total, unattributed from telemetry_coverage where signal = 'spans'")
    assert cov == [("spans", spans_total, UNATTRIBUTED_REQUESTS)]

    # every span carries the tenant from baggage, children included
    rows = _q(wh, "select tenant_id, count(*) from spans where kind = 'client' group by 1")
    assert dict(rows) == {t: p[0] for t, p in PLAN.items()}


def test_rerunning_the_same_landing_adds_nothing(landed, tmp_path):
    wh = tmp_path / "wh"
    first = run_batch([landed], wh)
    before = _q(wh, "select count(*) from spans")[0][0]
    second = run_batch([landed], wh)
    assert first.committed and not second.committed and second.inputs_new == 0
    assert _q(wh, "select count(*) from spans")[0][0] == before
