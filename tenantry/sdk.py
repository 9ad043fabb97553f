"""SDK set-up: OpenTelemetry providers with OTLP exporters and the tenant processors.

``configure()`` is the one call an app makes at start-up::

    providers = tenantry.configure("checkout", "http://collector:4318")
    ...
    providers.shutdown()  # at exit (the SDK also registers atexit hooks)

It builds a TracerProvider, MeterProvider and LoggerProvider, each exporting over OTLP
(http/protobuf or grpc) through batch processors, adds the tenant processors that copy
``tenant.id``, ``tenant.tier`` and ``user.id`` from baggage onto every span and log record,
installs them as the global providers, and sets the global propagator to W3C tracecontext +
baggage.

Configuration flows argument → environment variable → default:

- ``service_name`` → ``OTEL_SERVICE_NAME`` (or ``service.name`` in ``OTEL_RESOURCE_ATTRIBUTES``)
  → ``unknown_service``.
- ``endpoint`` (a base URL; for http/protobuf ``/v1/traces``, ``/v1/logs``, ``/v1/metrics`` are
  appended) → ``OTEL_EXPORTER_OTLP_{TRACES,LOGS,METRICS}_ENDPOINT`` (used as given) →
  ``OTEL_EXPORTER_OTLP_ENDPOINT`` (base) → the exporter default (localhost:4318 / :4317).
- ``protocol`` → ``OTEL_EXPORTER_OTLP_{SIGNAL}_PROTOCOL`` → ``OTEL_EXPORTER_OTLP_PROTOCOL`` →
  ``http/protobuf``.
- ``headers`` → ``OTEL_EXPORTER_OTLP_{SIGNAL}_HEADERS`` / ``OTEL_EXPORTER_OTLP_HEADERS`` (the
  exporters merge them; explicit headers win).
- ``resource_attributes`` → ``OTEL_RESOURCE_ATTRIBUTES`` (merged; explicit attributes win).
- ``tenant_tier_default`` → ``TENANTRY_TENANT_TIER_DEFAULT`` → none: the tier stamped when a
  tenant is in context without one (never a default *tenant*).
- ``export_interval_ms`` → ``OTEL_METRIC_EXPORT_INTERVAL`` → 60000.

Calling ``configure()`` twice does not replace anything: the OpenTelemetry global providers can
be set only once per process, so the second call logs a warning and returns the first set-up.
If another party (e.g. ``opentelemetry-instrument``) already installed SDK providers, configure
adds the tenant processors to those and uses them rather than fighting over the globals.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any, Mapping

from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.sdk._logs import LogRecordProcessor, ReadWriteLogRecord
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from tenantry.context import BAGGAGE_ID_ATTRIBUTE, BAGGAGE_MISMATCH_KEY, is_valid_id
from tenantry.conventions import TENANT_ID_KEY, TENANT_TIER_KEY, USER_ID_KEY

logger = logging.getLogger(__name__)

PROTOCOLS = ("http/protobuf", "grpc")
DEFAULT_PROTOCOL = "http/protobuf"
TIER_DEFAULT_ENV = "TENANTRY_TENANT_TIER_DEFAULT"
_HTTP_PATHS = {"traces": "v1/traces", "logs": "v1/logs", "metrics": "v1/metrics"}


def _tenant_attributes(ctx: otel_context.Context | None, tier_default: str | None) -> dict[str, str]:
    """The tenant attributes carried by ``ctx``'s baggage; invalid (forged, oversized) values
    are skipped, so they arrive unattributed rather than poisoning the tenant column."""
    bag = baggage.get_all(ctx)
    attrs: dict[str, str] = {}
    claimed = otel_context.get_value(BAGGAGE_MISMATCH_KEY, ctx)
    if isinstance(claimed, str):
        attrs[BAGGAGE_ID_ATTRIBUTE] = claimed
    tenant_id = bag.get(TENANT_ID_KEY)
    if not is_valid_id(tenant_id):
        return attrs
    attrs[TENANT_ID_KEY] = tenant_id  # type: ignore[assignment]
    tier = bag.get(TENANT_TIER_KEY)
    if is_valid_id(tier, "tenant tier"):
        attrs[TENANT_TIER_KEY] = tier  # type: ignore[assignment]
    elif tier_default is not None:
        attrs[TENANT_TIER_KEY] = tier_default
    user_id = bag.get(USER_ID_KEY)
    if is_valid_id(user_id, "user id"):
        attrs[USER_ID_KEY] = user_id  # type: ignore[assignment]
    return attrs


class TenantSpanProcessor(SpanProcessor):
    """Copies ``tenant.id``, ``tenant.tier`` and ``user.id`` from baggage onto each span at start.

    Attributes the app set explicitly when starting the span are kept. Never raises.
    """

    def __init__(self, tier_default: str | None = None) -> None:
        self._tier_default = tier_default

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        try:
            present = span.attributes or {}
            for key, value in _tenant_attributes(parent_context, self._tier_default).items():
                if key not in present:
                    span.set_attribute(key, value)
        except Exception:  # noqa: BLE001 - telemetry must never break the app
            logger.exception("tenantry: could not stamp tenant attributes on a span")

    def on_end(self, span: ReadableSpan) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class TenantLogRecordProcessor(LogRecordProcessor):
    """Copies the tenant keys from the baggage of the context a log record was emitted in
    (``ReadWriteLogRecord.log_record.context``) onto its attributes.

    Register it before the exporting processor. Attributes set explicitly are kept. Never raises.
    """

    def __init__(self, tier_default: str | None = None) -> None:
        self._tier_default = tier_default

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        try:
            record = log_record.log_record
            stamps = _tenant_attributes(getattr(record, "context", None), self._tier_default)
            if not stamps:
                return
            if record.attributes is None:
                record.attributes = {}
            for key, value in stamps.items():
                if key not in record.attributes:
                    record.attributes[key] = value  # type: ignore[index]
        except Exception:  # noqa: BLE001 - telemetry must never break the app
            logger.exception("tenantry: could not stamp tenant attributes on a log record")

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


@dataclass
class TenantryProviders:
    """The providers ``configure()`` installed. ``shutdown`` and ``force_flush`` never raise."""

    tracer_provider: Any
    meter_provider: Any
    logger_provider: Any

    def _each(self) -> list[Any]:
        return [self.tracer_provider, self.logger_provider, self.meter_provider]

    def force_flush(self, timeout_ms: int = 30000) -> bool:
        """Export everything buffered; True when every provider flushed within ``timeout_ms``."""
        ok = True
        for provider in self._each():
            try:
                ok = bool(provider.force_flush(timeout_ms)) and ok
            except Exception:  # noqa: BLE001
                logger.exception("tenantry: force_flush failed for %s", type(provider).__name__)
                ok = False
        return ok

    def shutdown(self) -> None:
        """Flush and shut down every provider (idempotent)."""
        for provider in self._each():
            try:
                provider.shutdown()
            except Exception:  # noqa: BLE001
                logger.exception("tenantry: shutdown failed for %s", type(provider).__name__)


_lock = threading.Lock()
_active: TenantryProviders | None = None


def configure(
    service_name: str | None = None,
    endpoint: str | None = None,
    *,
    protocol: str | None = None,
    headers: Mapping[str, str] | None = None,
    resource_attributes: Mapping[str, Any] | None = None,
    tenant_tier_default: str | None = None,
    span_exporter: Any = None,
    log_exporter: Any = None,
    metric_exporter: Any = None,
    export_interval_ms: int | None = None,
) -> TenantryProviders:
    """Set up tracing, metrics and logs with tenant stamping; see the module docstring.

    ``span_exporter``/``log_exporter`` replace the OTLP exporters (e.g. the SDK's in-memory
    exporters in tests); ``metric_exporter`` may be a ``MetricExporter`` (read periodically) or
    a ``MetricReader`` such as ``InMemoryMetricReader`` (used as is).

    Raises ``ValueError`` for an unknown protocol: a bad set-up fails at start-up.
    """
    global _active
    with _lock:
        if _active is not None:
            logger.warning("tenantry.configure() was already called; keeping the first set-up")
            return _active
        _active = _build(
            service_name, endpoint, protocol, headers, resource_attributes,
            tenant_tier_default, span_exporter, log_exporter, metric_exporter, export_interval_ms,
        )
        return _active


def _build(  # noqa: PLR0913
    service_name: str | None,
    endpoint: str | None,
    protocol: str | None,
    headers: Mapping[str, str] | None,
    resource_attributes: Mapping[str, Any] | None,
    tier_default: str | None,
    span_exporter: Any,
    log_exporter: Any,
    metric_exporter: Any,
    export_interval_ms: int | None,
) -> TenantryProviders:
    from opentelemetry import _logs, metrics, propagate
    from opentelemetry.baggage.propagation import W3CBaggagePropagator
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    if tier_default is None:
        tier_default = os.environ.get(TIER_DEFAULT_ENV) or None
    attrs = dict(resource_attributes or {})
    if service_name:
        attrs["service.name"] = service_name
    resource = Resource.create(attrs)

    # validated up front so a bad setting fails before any global provider is installed
    protocols = {signal: _protocol(protocol, signal) for signal in _HTTP_PATHS}

    def exporter(signal: str) -> Any:
        return _otlp_exporter(signal, protocols[signal], endpoint, headers)

    tracer_provider = trace.get_tracer_provider()
    if isinstance(tracer_provider, TracerProvider):
        logger.warning("tenantry: an SDK TracerProvider is already installed; adding tenant stamping to it")
        tracer_provider.add_span_processor(TenantSpanProcessor(tier_default))
    else:
        tracer_provider = TracerProvider(resource=resource)
        tracer_provider.add_span_processor(TenantSpanProcessor(tier_default))
        tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter or exporter("traces")))
        trace.set_tracer_provider(tracer_provider)

    logger_provider = _logs.get_logger_provider()
    if isinstance(logger_provider, LoggerProvider):
        logger.warning("tenantry: an SDK LoggerProvider is already installed; adding tenant stamping to it")
        logger_provider.add_log_record_processor(TenantLogRecordProcessor(tier_default))
    else:
        logger_provider = LoggerProvider(resource=resource)
        # stamping first: the batch processor hands the same record to its export thread
        logger_provider.add_log_record_processor(TenantLogRecordProcessor(tier_default))
        logger_provider.add_log_record_processor(BatchLogRecordProcessor(log_exporter or exporter("logs")))
        _logs.set_logger_provider(logger_provider)

    meter_provider = metrics.get_meter_provider()
    if not isinstance(meter_provider, MeterProvider):
        metric_exporter = metric_exporter or exporter("metrics")
        if isinstance(metric_exporter, MetricReader):
            reader = metric_exporter
        else:
            reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=export_interval_ms)
        meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
        metrics.set_meter_provider(meter_provider)

    propagate.set_global_textmap(CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()]))
    return TenantryProviders(tracer_provider, meter_provider, logger_provider)


def _protocol(explicit: str | None, signal: str) -> str:
    value = (
        explicit
        or os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or DEFAULT_PROTOCOL
    ).strip()
    if value not in PROTOCOLS:
        raise ValueError(
            f"tenantry.configure: unknown OTLP protocol {value!r} for {signal}; "
            f"use one of {', '.join(PROTOCOLS)} (argument protocol= or OTEL_EXPORTER_OTLP_PROTOCOL)"
        )
    return value


def _otlp_exporter(signal: str, protocol: str, endpoint: str | None, headers: Mapping[str, str] | None) -> Any:
    """The real OTLP exporter for ``signal``; with ``endpoint=None`` it reads OTEL_* itself."""
    kwargs: dict[str, Any] = {}
    if headers:
        kwargs["headers"] = dict(headers)
    if protocol == "grpc":
        if endpoint:
            kwargs["endpoint"] = endpoint
        if signal == "traces":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Exp
        elif signal == "logs":
            from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as Exp
        else:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as Exp
        return Exp(**kwargs)
    if endpoint:
        kwargs["endpoint"] = http_signal_endpoint(endpoint, signal)
    if signal == "traces":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Exp
    elif signal == "logs":
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as Exp
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as Exp
    return Exp(**kwargs)


def http_signal_endpoint(base: str, signal: str) -> str:
    """The OTLP/HTTP URL of ``signal`` under a base endpoint: ``http://c:4318`` → ``http://c:4318/v1/logs``."""
    return f"{base.rstrip('/')}/{_HTTP_PATHS[signal]}"


def _reset_for_tests() -> None:
    """Forget the set-up and the OpenTelemetry global providers, so a test can configure again.

    Uses OpenTelemetry's private globals (as its own test utilities do). Never call in an app.
    """
    global _active
    from opentelemetry._logs import _internal as logs_internal
    from opentelemetry.metrics import _internal as metrics_internal
    from opentelemetry.util._once import Once

    with _lock:
        if _active is not None:
            _active.shutdown()
        _active = None
        trace._TRACER_PROVIDER_SET_ONCE = Once()  # noqa: SLF001
        trace._TRACER_PROVIDER = None  # noqa: SLF001
        logs_internal._LOGGER_PROVIDER_SET_ONCE = Once()  # noqa: SLF001
        logs_internal._LOGGER_PROVIDER = None  # noqa: SLF001
        metrics_internal._METER_PROVIDER_SET_ONCE = Once()  # noqa: SLF001
        metrics_internal._METER_PROVIDER = None  # noqa: SLF001
