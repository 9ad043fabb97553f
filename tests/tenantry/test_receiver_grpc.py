"""OTLP/gRPC against a real receiver on a free loopback port (raw grpcio stubs)."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from tenantry import landing
from tenantry.receiver import Receiver

LIMIT = 2**20


@pytest.fixture
def rx(tmp_path):
    with Receiver(tmp_path / "landing", http_listen=None, grpc_listen="127.0.0.1:0",
                  max_body_bytes=LIMIT, flush_interval_s=0.01) as r:
        yield r


@pytest.fixture
def channel(rx):
    with grpc.insecure_channel(f"127.0.0.1:{rx.grpc_port}") as ch:
        yield ch


def landed(r: Receiver) -> list[tuple[str, bytes]]:
    return [rec for seg in landing.list_segments(r.landing) for rec in landing.iter_requests(seg)]


def trace_request(name: str, blob: str = "") -> trace_service_pb2.ExportTraceServiceRequest:
    span = trace_pb2.Span(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name=name)
    if blob:
        span.attributes.append(common_pb2.KeyValue(key="blob", value=common_pb2.AnyValue(string_value=blob)))
    req = trace_service_pb2.ExportTraceServiceRequest()
    req.resource_spans.add().scope_spans.add().spans.append(span)
    return req


def rich_status(err: grpc.RpcError) -> status_pb2.Status:
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    raise AssertionError("no grpc-status-details-bin in the trailers")


def test_each_signal_exports_ok_and_lands_the_bytes_sent(rx, channel):
    traces = trace_request("grpc-span")
    logs = logs_service_pb2.ExportLogsServiceRequest()
    logs.resource_logs.add().scope_logs.add().log_records.add().body.string_value = "log line"
    metrics = metrics_service_pb2.ExportMetricsServiceRequest()
    metrics.resource_metrics.add().scope_metrics.add().metrics.add().name = "requests"

    assert isinstance(trace_service_pb2_grpc.TraceServiceStub(channel).Export(traces, timeout=10),
                      trace_service_pb2.ExportTraceServiceResponse)
    logs_service_pb2_grpc.LogsServiceStub(channel).Export(logs, timeout=10)
    metrics_service_pb2_grpc.MetricsServiceStub(channel).Export(metrics, timeout=10)
    assert sorted(landed(rx)) == sorted([
        ("traces", traces.SerializeToString()),
        ("logs", logs.SerializeToString()),
        ("metrics", metrics.SerializeToString()),
    ])


def test_gzip_compressed_calls_are_accepted(rx, channel):
    req = trace_request("zipped", "z" * 10_000)
    trace_service_pb2_grpc.TraceServiceStub(channel).Export(req, timeout=10, compression=grpc.Compression.Gzip)
    assert landed(rx) == [("traces", req.SerializeToString())]


def test_an_empty_request_is_ok_and_lands_nothing(rx, channel):
    trace_service_pb2_grpc.TraceServiceStub(channel).Export(trace_service_pb2.ExportTraceServiceRequest(), timeout=10)
    assert landed(rx) == []
    assert rx.stats()["grpc_accepted_empty"] == 1


def test_oversized_request_is_resource_exhausted_without_retry_info(rx, channel):
    with pytest.raises(grpc.RpcError) as e:
        trace_service_pb2_grpc.TraceServiceStub(channel).Export(trace_request("big", "x" * (LIMIT + 1)), timeout=10)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # no RetryInfo: per the OTLP spec the client must not retry this
    assert all(k != "grpc-status-details-bin" for k, _ in e.value.trailing_metadata() or ())
    assert landed(rx) == []


def test_gzip_that_inflates_past_the_limit_is_resource_exhausted(rx, channel):
    req = trace_request("bomb", "\x00" * (8 * LIMIT))  # compresses to a few KiB on the wire
    with pytest.raises(grpc.RpcError) as e:
        trace_service_pb2_grpc.TraceServiceStub(channel).Export(req, timeout=10, compression=grpc.Compression.Gzip)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert landed(rx) == []


def test_malformed_bytes_are_invalid_argument_with_bad_request_detail(rx, channel):
    raw = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                              request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as e:
        raw(b"\xff\xff\xff\xff\x0f", timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ExportTraceServiceRequest" in e.value.details()
    bad = error_details_pb2.BadRequest()
    assert rich_status(e.value).details[0].Unpack(bad)
    assert landed(rx) == []


def test_a_failed_landing_write_is_unavailable_with_retry_info_and_lands_nothing(rx, channel):
    def broken(landing_dir, records):
        raise OSError(28, "No space left on device")

    rx.writer._write_segment = broken
    with pytest.raises(grpc.RpcError) as e:
        trace_service_pb2_grpc.TraceServiceStub(channel).Export(trace_request("lost"), timeout=10)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "No space left on device" in e.value.details()
    retry = error_details_pb2.RetryInfo()
    assert rich_status(e.value).details[0].Unpack(retry) and retry.retry_delay.seconds == 1
    assert landing.list_segments(rx.landing) == []
    assert rx.stats()["grpc_status_UNAVAILABLE"] == 1


def test_unknown_method_is_unimplemented(rx, channel):
    raw = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Nope",
                              request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as e:
        raw(b"", timeout=10)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
