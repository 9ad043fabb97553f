"""The real OpenTelemetry SDK OTLP exporters (HTTP and gRPC, spans and logs) against a real
receiver: what lands decodes back to exactly what the SDK exported."""

from __future__ import annotations

import grpc
import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tenantry import landing
from tenantry.receiver import Receiver

HOSTILE = "租户'; DROP TABLE spans; -- 🙂"


@pytest.fixture(scope="module")
def rx(tmp_path_factory):
    with Receiver(tmp_path_factory.mktemp("landing"), http_listen="127.0.0.1:0", grpc_listen="127.0.0.1:0",
                  flush_interval_s=0.01) as r:
        yield r


@pytest.fixture(scope="module")
def seen():
    """Segments already checked by an earlier test in this module (they share one receiver)."""
    return set()


def landed_since(r: Receiver, seen: set, signal: str) -> list[bytes]:
    out = []
    for seg in landing.list_segments(r.landing):
        if seg not in seen:
            seen.add(seg)
            out += [b for s, b in landing.iter_requests(seg) if s == signal]
    return out


def make_spans(n: int):
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout", "tenant.id": "acme"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test")
    for i in range(n):
        with tracer.start_as_current_span(f"op-{i}") as span:
            span.set_attribute("note", HOSTILE)
            span.set_attribute("i", i)
    provider.shutdown()
    return memory.get_finished_spans()


def span_keys_sent(spans) -> set:
    return {(s.context.trace_id.to_bytes(16, "big"), s.context.span_id.to_bytes(8, "big"), s.name,
             s.attributes["note"]) for s in spans}


def span_keys_landed(bodies: list[bytes]) -> set:
    keys = set()
    for body in bodies:
        req = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        for rs in req.resource_spans:
            attrs = {kv.key: kv.value.string_value for kv in rs.resource.attributes}
            assert attrs["tenant.id"] == "acme"
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    note = next(kv.value.string_value for kv in sp.attributes if kv.key == "note")
                    keys.add((sp.trace_id, sp.span_id, sp.name, note))
    return keys


@pytest.mark.parametrize("transport", ["http", "http-gzip", "grpc", "grpc-gzip"])
def test_sdk_span_exporter_spans_land_and_decode_back_identically(rx, seen, transport):
    spans = make_spans(25)
    if transport.startswith("http"):
        exporter = HttpSpanExporter(endpoint=f"http://127.0.0.1:{rx.http_port}/v1/traces", timeout=10,
                                    compression=Compression.Gzip if transport.endswith("gzip") else None)
    else:
        exporter = GrpcSpanExporter(endpoint=f"127.0.0.1:{rx.grpc_port}", insecure=True, timeout=10,
                                    compression=grpc.Compression.Gzip if transport.endswith("gzip") else None)
    try:
        assert exporter.export(spans) == SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    assert span_keys_landed(landed_since(rx, seen, "traces")) == span_keys_sent(spans)


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_sdk_log_exporter_records_land_and_decode_back_identically(rx, seen, transport):
    memory = InMemoryLogRecordExporter()
    if transport == "http":
        exporter = HttpLogExporter(endpoint=f"http://127.0.0.1:{rx.http_port}/v1/logs", timeout=10)
    else:
        exporter = GrpcLogExporter(endpoint=f"127.0.0.1:{rx.grpc_port}", insecure=True, timeout=10)
    provider = LoggerProvider(resource=Resource.create({"service.name": "billing"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = provider.get_logger("test")
    for i in range(5):
        logger.emit(body=f"{HOSTILE} #{i}", severity_number=SeverityNumber.WARN, attributes={"tenant.id": "acme"})
    provider.shutdown()
    sent = sorted(r.log_record.body for r in memory.get_finished_logs())
    assert len(sent) == 5
    bodies = landed_since(rx, seen, "logs")
    got = sorted(
        lr.body.string_value
        for b in bodies
        for rl in logs_service_pb2.ExportLogsServiceRequest.FromString(b).resource_logs
        for sl in rl.scope_logs
        for lr in sl.log_records
    )
    assert got == sent
