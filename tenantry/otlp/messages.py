"""OTLP message classes: the standard ones, and "lite" twins that are faster to decode.

The lite classes are the same protobuf schema with two changes that keep the wire format
identical but spare the decoder a Python object per attribute:

- every ``attributes`` field of a record (span, log record, data point, resource) is declared
  ``repeated bytes`` instead of ``repeated KeyValue``, so each attribute arrives as its raw
  serialized ``KeyValue`` and :mod:`tenantry.otlp.attrs` decodes them all at once with numpy;
- ``Span.status`` is declared ``bytes`` (a status is a handful of bytes that repeat, so the
  decoder parses each distinct one once), and ``Span.events`` / ``Span.links`` are declared
  ``repeated bytes`` because no normalized table uses them (they are not parsed at all).

A message that parses with a lite class has the same fields as with the standard class; the
differences are only in what upb validates eagerly (the bytes fields are checked when decoded).
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

SIGNALS = ("traces", "logs", "metrics")

_ALIASES = {
    "traces": "traces", "trace": "traces", "spans": "traces", "span": "traces",
    "logs": "logs", "log": "logs",
    "metrics": "metrics", "metric": "metrics",
}

#: the standard Export*ServiceRequest class of each signal
REQUEST_CLASSES = {
    "traces": trace_service_pb2.ExportTraceServiceRequest,
    "logs": logs_service_pb2.ExportLogsServiceRequest,
    "metrics": metrics_service_pb2.ExportMetricsServiceRequest,
}

#: top-level JSON / proto field holding the resource list of each signal
RESOURCE_FIELD = {"traces": "resourceSpans", "logs": "resourceLogs", "metrics": "resourceMetrics"}


class OtlpDecodeError(ValueError):
    """An OTLP request could not be decoded. The message says what was wrong and where."""


def normalize_signal(signal: str) -> str:
    """``traces`` | ``logs`` | ``metrics`` for any accepted spelling; OtlpDecodeError otherwise."""
    key = str(signal).strip().lower()
    if key not in _ALIASES:
        raise OtlpDecodeError(f"unknown OTLP signal {signal!r}; expected one of {', '.join(SIGNALS)}")
    return _ALIASES[key]


# (file, message) -> fields turned into bytes. Repeated stays repeated, singular stays singular.
_AS_BYTES = {
    "opentelemetry/proto/resource/v1/resource.proto": {"Resource": ("attributes",)},
    "opentelemetry/proto/trace/v1/trace.proto": {"Span": ("attributes", "status", "events", "links")},
    "opentelemetry/proto/logs/v1/logs.proto": {"LogRecord": ("attributes",)},
    "opentelemetry/proto/metrics/v1/metrics.proto": {
        "NumberDataPoint": ("attributes",),
        "HistogramDataPoint": ("attributes",),
        "ExponentialHistogramDataPoint": ("attributes",),
        "SummaryDataPoint": ("attributes",),
    },
}


def _build_lite_classes(extra: dict | None = None) -> dict:
    as_bytes = {f: dict(m) for f, m in _AS_BYTES.items()}
    for f, msgs in (extra or {}).items():
        as_bytes.setdefault(f, {}).update(msgs)
    pool = descriptor_pool.DescriptorPool()
    modules = (common_pb2, resource_pb2, trace_pb2, logs_pb2, metrics_pb2,
               trace_service_pb2, logs_service_pb2, metrics_service_pb2)
    for mod in modules:
        fdp = descriptor_pb2.FileDescriptorProto()
        mod.DESCRIPTOR.CopyToProto(fdp)
        changes = as_bytes.get(fdp.name, {})
        for msg in fdp.message_type:
            for field in msg.field:
                if field.name in changes.get(msg.name, ()):
                    field.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
                    field.ClearField("type_name")
        pool.Add(fdp)
    out = {}
    for signal, cls in REQUEST_CLASSES.items():
        out[signal] = message_factory.GetMessageClass(pool.FindMessageTypeByName(cls.DESCRIPTOR.full_name))
    return out


#: the lite Export*ServiceRequest class of each signal (see the module docstring)
LITE_CLASSES = _build_lite_classes()
#: traces request whose spans are left as raw bytes, for the numpy span decoder (tenantry.otlp.wire)
SPAN_BYTES_REQUEST = _build_lite_classes(
    {"opentelemetry/proto/trace/v1/trace.proto": {"ScopeSpans": ("spans",)}})["traces"]
#: traces request whose ScopeSpans are left as raw bytes, for the C decoder's decode_scopes (no Python
#: object per span at all)
SCOPE_BYTES_REQUEST = _build_lite_classes(
    {"opentelemetry/proto/trace/v1/trace.proto": {"ResourceSpans": ("scope_spans",)}})["traces"]
#: logs request whose log records are left as raw bytes, for the C decoder (tenantry/otlp/_fastspans.c)
LOG_BYTES_REQUEST = _build_lite_classes(
    {"opentelemetry/proto/logs/v1/logs.proto": {"ScopeLogs": ("log_records",)}})["logs"]

KeyValue = common_pb2.KeyValue
AnyValue = common_pb2.AnyValue
Status = trace_pb2.Status
InstrumentationScope = common_pb2.InstrumentationScope
