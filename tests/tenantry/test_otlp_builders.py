"""Builders of real OTLP protobuf requests for the tenantry.otlp tests (plus a check of them)."""

from __future__ import annotations

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

T0 = 1_700_000_000_123_456_789  # ns, with sub-microsecond digits on purpose


def any_value(v) -> AnyValue:
    a = AnyValue()
    if v is None:
        return a
    if isinstance(v, bool):
        a.bool_value = v
    elif isinstance(v, int):
        a.int_value = v
    elif isinstance(v, float):
        a.double_value = v
    elif isinstance(v, bytes):
        a.bytes_value = v
    elif isinstance(v, list):
        a.array_value.values.extend(any_value(x) for x in v)
    elif isinstance(v, dict):
        a.kvlist_value.values.extend(kv(k, x) for k, x in v.items())
    else:
        a.string_value = v
    return a


def kv(key: str, value) -> KeyValue:
    return KeyValue(key=key, value=any_value(value))


def kvs(attrs: dict | None) -> list[KeyValue]:
    return [kv(k, v) for k, v in (attrs or {}).items()]


def trace_request(spans: list[dict], resource: dict | None = None, scope: str = "test.lib",
                  resources: int = 1) -> ExportTraceServiceRequest:
    """``resources`` copies of one resource, each with all ``spans`` (dicts of Span fields)."""
    req = ExportTraceServiceRequest()
    for _ in range(resources):
        rs = req.resource_spans.add()
        rs.resource.attributes.extend(kvs({"service.name": "checkout", **(resource or {})}))
        ss = rs.scope_spans.add()
        ss.scope.name = scope
        for i, spec in enumerate(spans):
            s = ss.spans.add()
            s.trace_id = spec.get("trace_id", bytes(range(16)))
            s.span_id = spec.get("span_id", bytes([0xAB] * 7 + [i % 256]))
            s.parent_span_id = spec.get("parent_span_id", b"")
            s.name = spec.get("name", f"op-{i}")
            s.kind = spec.get("kind", 2)
            s.start_time_unix_nano = spec.get("start", T0)
            s.end_time_unix_nano = spec.get("end", T0 + 1_500_000)
            code, message = spec.get("status", (0, ""))
            s.status.code = code
            s.status.message = message
            s.attributes.extend(kvs(spec.get("attrs")))
    return req


def log_request(records: list[dict], resource: dict | None = None) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.extend(kvs({"service.name": "billing", **(resource or {})}))
    sl = rl.scope_logs.add()
    sl.scope.name = "tenantry"
    for spec in records:
        r = sl.log_records.add()
        r.time_unix_nano = spec.get("time", T0)
        r.observed_time_unix_nano = spec.get("observed", T0 + 5)
        r.severity_number = spec.get("severity", 9)
        r.severity_text = spec.get("severity_text", "INFO")
        if "body" in spec:
            r.body.CopyFrom(any_value(spec["body"]))
        if spec.get("event_name"):
            r.event_name = spec["event_name"]
        r.trace_id = spec.get("trace_id", b"")
        r.span_id = spec.get("span_id", b"")
        r.attributes.extend(kvs(spec.get("attrs")))
    return req


def usage_record(event_id="ev-1", meter="api.calls", quantity="1", unit="1", dims=None, tenant="acme", **extra):
    attrs = {"tenant.id": tenant}
    if event_id is not None:
        attrs["tenantry.usage.event_id"] = event_id
    if meter is not None:
        attrs["tenantry.usage.meter"] = meter
    if quantity is not None:
        attrs["tenantry.usage.quantity"] = quantity
    if unit is not None:
        attrs["tenantry.usage.unit"] = unit
    for k, v in (dims or {}).items():
        attrs[f"tenantry.usage.dim.{k}"] = v
    return {"event_name": "tenantry.usage", "attrs": attrs, **extra}


def metric_request(metrics: list[dict], resource: dict | None = None) -> ExportMetricsServiceRequest:
    """``metrics``: dicts with name, kind (gauge|sum|histogram|exponential_histogram|summary), points."""
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.extend(kvs({"service.name": "api", **(resource or {})}))
    sm = rm.scope_metrics.add()
    for spec in metrics:
        m = sm.metrics.add()
        m.name = spec["name"]
        data = getattr(m, spec["kind"])
        if spec["kind"] in ("sum", "histogram", "exponential_histogram"):
            data.aggregation_temporality = spec.get("temporality", 2)
        if spec["kind"] == "sum":
            data.is_monotonic = spec.get("monotonic", True)
        for p_spec in spec["points"]:
            p = data.data_points.add()
            p.time_unix_nano = p_spec.get("time", T0)
            p.start_time_unix_nano = p_spec.get("start", T0 - 10**9)
            p.attributes.extend(kvs(p_spec.get("attrs")))
            for field, value in p_spec.items():
                if field in ("time", "start", "attrs"):
                    continue
                if isinstance(value, list):
                    getattr(p, field).extend(value)
                else:
                    setattr(p, field, value)
    return req


def test_builders_make_requests_that_round_trip_through_protobuf():
    req = trace_request([{"attrs": {"a": [1, {"b": True}]}}])
    assert ExportTraceServiceRequest.FromString(req.SerializeToString()) == req
