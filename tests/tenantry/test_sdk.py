"""configure() and the tenant processors, with the real OpenTelemetry SDK and in-memory exporters."""

from __future__ import annotations

import gzip
import json
import logging
import os
import pathlib
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
from opentelemetry import _logs, baggage, metrics, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tenantry
from tenantry.schemas import TENANT_ID_KEY, TENANT_TIER_KEY, USAGE_EVENT_NAME, USER_ID_KEY
from tenantry.sdk import TenantSpanProcessor, _otlp_exporter, _reset_for_tests, http_signal_endpoint

ROOT = pathlib.Path(tenantry.__file__).resolve().parent.parent


@pytest.fixture
def otel():
    _reset_for_tests()
    spans, logs, reader = InMemorySpanExporter(), InMemoryLogRecordExporter(), InMemoryMetricReader()
    providers = tenantry.configure(
        "svc-test", span_exporter=spans, log_exporter=logs, metric_exporter=reader, tenant_tier_default="standard"
    )
    yield SimpleNamespace(providers=providers, spans=spans, logs=logs, reader=reader)
    _reset_for_tests()


def _span_attrs(otel):
    otel.providers.force_flush(5000)
    return {s.name: dict(s.attributes) for s in otel.spans.get_finished_spans()}


def _log_attrs(otel):
    otel.providers.force_flush(5000)
    return [dict(r.log_record.attributes) for r in otel.logs.get_finished_logs()]


def test_spans_inside_tenant_context_carry_tenant_attributes_and_outside_do_not(otel):
    tracer = trace.get_tracer("t")
    with tenantry.tenant_context("acme", tier="pro", user_id="u-7"):
        with tracer.start_as_current_span("inside"):
            with tracer.start_as_current_span("child"):
                pass
    with tracer.start_as_current_span("outside"):
        pass
    attrs = _span_attrs(otel)
    assert attrs["inside"] == {TENANT_ID_KEY: "acme", TENANT_TIER_KEY: "pro", USER_ID_KEY: "u-7"}
    assert attrs["child"][TENANT_ID_KEY] == "acme"
    assert TENANT_ID_KEY not in attrs["outside"]


def test_log_records_inside_tenant_context_carry_tenant_attributes_and_outside_do_not(otel):
    sdk_logger = _logs.get_logger("t")
    with tenantry.tenant_context("globex", user_id="u-1"):
        sdk_logger.emit(body="inside", attributes={"k": "v"})
    sdk_logger.emit(body="outside")
    inside, outside = _log_attrs(otel)
    assert inside == {"k": "v", TENANT_ID_KEY: "globex", TENANT_TIER_KEY: "standard", USER_ID_KEY: "u-1"}
    assert outside == {}


def test_python_logging_through_the_otel_handler_is_stamped_too(otel):
    from opentelemetry.sdk._logs import LoggingHandler

    handler = LoggingHandler(logger_provider=otel.providers.logger_provider)
    log = logging.getLogger("tenantry.test.stdlib")
    log.addHandler(handler)
    try:
        with tenantry.tenant_context("acme"):
            log.warning("hello")
    finally:
        log.removeHandler(handler)
    (attrs,) = _log_attrs(otel)
    assert attrs[TENANT_ID_KEY] == "acme"


def test_tier_default_fills_a_missing_tier_but_never_invents_a_tenant(otel):
    tracer = trace.get_tracer("t")
    with tenantry.tenant_context("acme"):
        with tracer.start_as_current_span("no-tier"):
            pass
    with tracer.start_as_current_span("no-tenant"):
        pass
    attrs = _span_attrs(otel)
    assert attrs["no-tier"][TENANT_TIER_KEY] == "standard"
    assert attrs["no-tenant"] == {}


def test_attributes_set_explicitly_by_the_app_win_over_baggage(otel):
    with tenantry.tenant_context("acme"):
        with trace.get_tracer("t").start_as_current_span("s", attributes={TENANT_ID_KEY: "batch-owner"}):
            pass
        _logs.get_logger("t").emit(body="x", attributes={TENANT_ID_KEY: "batch-owner"})
    assert _span_attrs(otel)["s"][TENANT_ID_KEY] == "batch-owner"
    assert _log_attrs(otel)[0][TENANT_ID_KEY] == "batch-owner"


@pytest.mark.parametrize("forged", ["", "x" * 5000, "evil\x00id", "a\nb"])
def test_invalid_tenant_values_in_baggage_are_not_stamped(otel, forged):
    token = otel_context.attach(baggage.set_baggage(TENANT_ID_KEY, forged))
    try:
        with trace.get_tracer("t").start_as_current_span("s"):
            pass
    finally:
        otel_context.detach(token)
    assert TENANT_ID_KEY not in _span_attrs(otel)["s"]


def test_metric_points_carry_tenant_when_recorded_with_tenant_attributes(otel):
    counter = metrics.get_meter("t").create_counter("requests")
    with tenantry.tenant_context("acme", tier="pro", user_id="u-1"):
        counter.add(2, {**tenantry.tenant_attributes(), "route": "/x"})
    counter.add(1, tenantry.tenant_attributes())
    data = otel.reader.get_metrics_data()
    points = [dict(p.attributes) for rm in data.resource_metrics for sm in rm.scope_metrics
              for m in sm.metrics for p in m.data.data_points]
    assert {TENANT_ID_KEY: "acme", TENANT_TIER_KEY: "pro", "route": "/x"} in points
    assert {} in points
    assert all(USER_ID_KEY not in p for p in points)


def test_global_propagator_injects_tracecontext_and_tenant_baggage(otel):
    headers: dict[str, str] = {}
    with tenantry.tenant_context("acme.eu:prod@x-1", tier="pro", user_id="用户-1"):
        with trace.get_tracer("t").start_as_current_span("client"):
            propagate.inject(headers)
    assert "traceparent" in headers
    assert "tenant.id=acme.eu%3Aprod%40x-1" in headers["baggage"]  # ':' and '@' percent-encoded
    assert "tenant.tier=pro" in headers["baggage"]
    assert "%E7%94%A8" in headers["baggage"]  # a unicode user id is percent-encoded on the wire


def test_tenant_crosses_a_service_boundary_via_baggage_headers_in_process(otel):
    headers: dict[str, str] = {}
    with tenantry.tenant_context("acme", tier="pro"):
        propagate.inject(headers)
    # "another service": its own provider, a fresh context, only the headers in common
    exporter = InMemorySpanExporter()
    other = TracerProvider()
    other.add_span_processor(TenantSpanProcessor())
    other.add_span_processor(SimpleSpanProcessor(exporter))
    token = otel_context.attach(propagate.extract(headers, context=Context()))
    try:
        with other.get_tracer("svc-b").start_as_current_span("server"):
            pass
    finally:
        otel_context.detach(token)
    (span,) = exporter.get_finished_spans()
    assert span.attributes[TENANT_ID_KEY] == "acme"
    assert span.attributes[TENANT_TIER_KEY] == "pro"


_OTHER_SERVICE = """
import json, sys
from opentelemetry import context, propagate
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tenantry.sdk import TenantSpanProcessor

headers = json.loads(sys.stdin.read())
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(TenantSpanProcessor())
provider.add_span_processor(SimpleSpanProcessor(exporter))
token = context.attach(propagate.extract(headers, context=Context()))
with provider.get_tracer("svc-b").start_as_current_span("server"):
    pass
context.detach(token)
span = exporter.get_finished_spans()[0]
print(json.dumps({"attributes": dict(span.attributes), "trace_id": format(span.context.trace_id, "032x")}))
"""


def test_tenant_crosses_a_real_process_boundary_via_baggage_headers(otel):
    headers: dict[str, str] = {}
    # a well-formed tenant id using the whole allowed alphabet, and a unicode, SQL-looking user id
    # (user ids keep the looser rule): both must arrive verbatim in the other process
    with tenantry.tenant_context("Acme-42.eu_west:prod@x", user_id="用户' OR '1'='1"):
        with trace.get_tracer("t").start_as_current_span("client") as span:
            propagate.inject(headers)
            trace_id = format(span.get_span_context().trace_id, "032x")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", _OTHER_SERVICE], input=json.dumps(headers),
                          capture_output=True, text=True, env=env, timeout=60, check=True)
    result = json.loads(done.stdout)
    assert result["attributes"] == {TENANT_ID_KEY: "Acme-42.eu_west:prod@x", USER_ID_KEY: "用户' OR '1'='1"}
    assert result["trace_id"] == trace_id


def test_configure_twice_warns_and_returns_the_first_setup(otel, caplog):
    with caplog.at_level(logging.WARNING, logger="tenantry.sdk"):
        again = tenantry.configure("other-service", span_exporter=InMemorySpanExporter())
    assert again is otel.providers
    assert "already called" in caplog.text
    assert trace.get_tracer_provider() is otel.providers.tracer_provider


def test_configure_adds_tenant_stamping_to_sdk_providers_installed_by_someone_else():
    _reset_for_tests()
    try:
        exporter = InMemorySpanExporter()
        existing = TracerProvider()
        existing.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(existing)
        providers = tenantry.configure("svc", log_exporter=InMemoryLogRecordExporter(),
                                       metric_exporter=InMemoryMetricReader())
        assert providers.tracer_provider is existing
        with tenantry.tenant_context("acme"):
            with trace.get_tracer("t").start_as_current_span("s"):
                pass
        assert exporter.get_finished_spans()[0].attributes[TENANT_ID_KEY] == "acme"
    finally:
        _reset_for_tests()


def test_unknown_protocol_fails_at_startup_naming_the_choices(monkeypatch):
    _reset_for_tests()
    with pytest.raises(ValueError, match="http/protobuf, grpc"):
        tenantry.configure("svc", protocol="http/json")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "carrier-pigeon")
    with pytest.raises(ValueError, match="carrier-pigeon"):
        tenantry.configure("svc")
    # nothing was half-installed: the app can fix the setting and configure again
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    _reset_for_tests()


def test_exporters_follow_the_protocol_and_http_endpoints_get_signal_paths():
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs

    assert http_signal_endpoint("http://c:4318/", "traces") == "http://c:4318/v1/traces"
    assert http_signal_endpoint("http://c:4318/otlp", "metrics") == "http://c:4318/otlp/v1/metrics"
    logs_exporter = _otlp_exporter("logs", "http/protobuf", "http://c:4318", {"a": "b"})
    assert isinstance(logs_exporter, HttpLogs)
    assert logs_exporter._endpoint == "http://c:4318/v1/logs"  # noqa: SLF001
    grpc_exporter = _otlp_exporter("traces", "grpc", "http://localhost:4317", None)
    assert isinstance(grpc_exporter, GrpcSpans)
    grpc_exporter.shutdown()


def test_shutdown_and_force_flush_never_raise(otel):
    assert otel.providers.force_flush(1000) is True
    otel.providers.shutdown()
    otel.providers.shutdown()  # idempotent
    otel.providers.force_flush(10)


# --- real OTLP/HTTP export to a local server --------------------------------------------------


class _Collector(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.received.append((self.path, dict(self.headers), body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def collector():
    handler = type("Handler", (_Collector,), {"received": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _reset_for_tests()
    yield SimpleNamespace(url=f"http://127.0.0.1:{server.server_address[1]}", received=handler.received)
    _reset_for_tests()
    server.shutdown()
    server.server_close()


def _attrs(kvs):
    return {kv.key: kv.value.string_value for kv in kvs}


def test_configure_exports_over_real_otlp_http_with_tenant_attributes(collector):
    providers = tenantry.configure("svc-http", collector.url, headers={"X-Collector-Token": "tok"},
                                   resource_attributes={"deployment.environment": "test"})
    with tenantry.tenant_context("acme", tier="pro"):
        with trace.get_tracer("t").start_as_current_span("work"):
            event_id = tenantry.record_usage("api.calls", 3, unit="{call}")
        metrics.get_meter("t").create_counter("hits").add(1, tenantry.tenant_attributes())
    assert providers.force_flush(10_000)

    by_path = {}
    for path, headers, body in collector.received:
        by_path.setdefault(path, []).append((headers, body))
    assert {"/v1/traces", "/v1/logs", "/v1/metrics"} <= set(by_path)
    headers, body = by_path["/v1/traces"][0]
    assert {k.lower(): v for k, v in headers.items()}["x-collector-token"] == "tok"

    traces = ExportTraceServiceRequest.FromString(body)
    resource = _attrs(traces.resource_spans[0].resource.attributes)
    assert resource["service.name"] == "svc-http"
    assert resource["deployment.environment"] == "test"
    span = traces.resource_spans[0].scope_spans[0].spans[0]
    assert _attrs(span.attributes) == {TENANT_ID_KEY: "acme", TENANT_TIER_KEY: "pro"}

    logs = ExportLogsServiceRequest.FromString(by_path["/v1/logs"][0][1])
    record = logs.resource_logs[0].scope_logs[0].log_records[0]
    assert record.event_name == USAGE_EVENT_NAME
    attrs = _attrs(record.attributes)
    assert attrs[TENANT_ID_KEY] == "acme"
    assert attrs["tenantry.usage.event_id"] == event_id
    assert attrs["tenantry.usage.quantity"] == "3"
    assert record.span_id == span.span_id  # usage recorded inside a span points at it

    metric_req = ExportMetricsServiceRequest.FromString(by_path["/v1/metrics"][-1][1])
    point = metric_req.resource_metrics[0].scope_metrics[0].metrics[0].sum.data_points[0]
    assert _attrs(point.attributes) == {TENANT_ID_KEY: "acme", TENANT_TIER_KEY: "pro"}


def test_configure_honours_otel_environment_variables(collector, monkeypatch):
    monkeypatch.setenv("OTEL_SERVICE_NAME", "svc-from-env")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "team=billing")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", collector.url + "/custom/traces")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-env-token=abc")
    providers = tenantry.configure()
    with tenantry.tenant_context("acme"):
        with trace.get_tracer("t").start_as_current_span("work"):
            pass
        _logs.get_logger("t").emit(body="hello")
    assert providers.force_flush(10_000)
    paths = {path for path, _, _ in collector.received}
    assert "/custom/traces" in paths  # the per-signal endpoint is used as given
    assert "/v1/logs" in paths  # the base endpoint gets the signal path
    headers, body = next((h, b) for p, h, b in collector.received if p == "/custom/traces")
    assert {k.lower(): v for k, v in headers.items()}["x-env-token"] == "abc"
    resource = _attrs(ExportTraceServiceRequest.FromString(body).resource_spans[0].resource.attributes)
    assert resource["service.name"] == "svc-from-env"
    assert resource["team"] == "billing"
