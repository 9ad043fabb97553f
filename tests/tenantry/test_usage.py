"""record_usage: one OpenTelemetry log record per usage event, exact quantities, loud errors."""

from __future__ import annotations

import uuid
from decimal import Decimal
from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import pytest
from opentelemetry import trace
from opentelemetry.sdk._logs import LogRecordProcessor
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tenantry
from tenantry import UsageError, record_usage, tenant_context
from tenantry.schemas import (
    TENANT_ID_KEY,
    TENANT_TIER_KEY,
    USAGE_EVENT_ID_KEY,
    USAGE_EVENT_NAME,
    USAGE_METER_KEY,
    USAGE_QUANTITY_KEY,
    USAGE_UNIT_KEY,
    USER_ID_KEY,
)
from tenantry.sdk import _reset_for_tests


@pytest.fixture
def otel():
    _reset_for_tests()
    logs = InMemoryLogRecordExporter()
    providers = tenantry.configure("svc", span_exporter=InMemorySpanExporter(), log_exporter=logs,
                                   metric_exporter=InMemoryMetricReader())

    def records():
        providers.force_flush(5000)
        return [r.log_record for r in logs.get_finished_logs()]

    yield SimpleNamespace(providers=providers, records=records)
    _reset_for_tests()


def test_record_usage_emits_one_event_record_with_every_contract_attribute(otel):
    with tenant_context("acme", tier="pro", user_id="u-1"):
        event_id = record_usage("api.calls", 3, unit="{call}", route="/search", region="eu")
    (rec,) = otel.records()
    assert rec.event_name == USAGE_EVENT_NAME
    assert dict(rec.attributes) == {
        "event.name": USAGE_EVENT_NAME,
        TENANT_ID_KEY: "acme",
        TENANT_TIER_KEY: "pro",
        USER_ID_KEY: "u-1",
        USAGE_EVENT_ID_KEY: event_id,
        USAGE_METER_KEY: "api.calls",
        USAGE_QUANTITY_KEY: "3",
        USAGE_UNIT_KEY: "{call}",
        "tenantry.usage.dim.route": "/search",
        "tenantry.usage.dim.region": "eu",
    }
    assert uuid.UUID(hex=event_id).version == 4 and event_id == uuid.UUID(event_id).hex
    assert rec.timestamp is not None


def test_given_event_id_is_kept_so_retries_are_idempotent(otel):
    with tenant_context("acme"):
        assert record_usage("m", 1, event_id="order-123:line-1") == "order-123:line-1"
        assert record_usage("m", 1, event_id="order-123:line-1") == "order-123:line-1"
    ids = {r.attributes[USAGE_EVENT_ID_KEY] for r in otel.records()}
    assert ids == {"order-123:line-1"}


def test_generated_event_ids_are_unique(otel):
    with tenant_context("acme"):
        ids = {record_usage("m", 1) for _ in range(200)}
    assert len(ids) == 200


@pytest.mark.parametrize(
    ("quantity", "text"),
    [
        (3, "3"),
        (0, "0"),
        (0.1, "0.1"),
        (1 / 3, "0.3333333333333333"),
        (2.5e-7, "0.00000025"),
        (-0.0, "0.0"),  # no negative zero
        (10**20, "100000000000000000000"),
        (Decimal("1.50"), "1.50"),
        (Decimal("1E+3"), "1000"),
        ("2.75", "2.75"),
        (" 7 ", "7"),
        ("1e3", "1000"),
        (np.float64(0.1), "0.1"),
        (np.int64(42), "42"),
    ],
)
def test_quantity_is_an_exact_decimal_string(otel, quantity, text):
    with tenant_context("acme"):
        record_usage("m", quantity)
    (rec,) = otel.records()
    assert rec.attributes[USAGE_QUANTITY_KEY] == text


@pytest.mark.parametrize(
    "quantity",
    [float("nan"), float("inf"), float("-inf"), -1, -0.5, Decimal("-2"), Decimal("NaN"), Decimal("sNaN"),
     "Infinity", "NaN", "-3", "abc", "", "1; DROP TABLE usage", True, False, None, [1], Fraction(1, 3),
     np.bool_(True), "1e999999", 1e40, 5e-324, "9" * 10_000],
)
def test_quantity_that_is_not_a_finite_non_negative_number_raises_usage_error(otel, quantity):
    with tenant_context("acme"):
        with pytest.raises(UsageError) as err:
            record_usage("m", quantity)
    assert isinstance(err.value, ValueError)
    assert len(str(err.value)) < 300
    assert otel.records() == []


def test_outside_tenant_context_raises_and_emits_nothing(otel):
    with pytest.raises(UsageError, match="outside a tenant context"):
        record_usage("api.calls", 1)
    assert otel.records() == []


@pytest.mark.parametrize("meter", ["", "   ", None, "m\n", "x" * 500])
def test_bad_meter_name_raises(otel, meter):
    with tenant_context("acme"):
        with pytest.raises(UsageError, match="meter"):
            record_usage(meter, 1)


def test_bad_unit_or_event_id_raise(otel):
    with tenant_context("acme"):
        with pytest.raises(UsageError, match="unit"):
            record_usage("m", 1, unit="")
        with pytest.raises(UsageError, match="event_id"):
            record_usage("m", 1, event_id="id\x00")


def test_without_a_logger_provider_usage_raises_instead_of_vanishing():
    _reset_for_tests()
    with tenant_context("acme"):
        with pytest.raises(UsageError, match="LoggerProvider"):
            record_usage("api.calls", 1)


def test_any_sdk_logger_provider_set_by_the_app_or_a_test_is_accepted():
    from opentelemetry import _logs
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor

    _reset_for_tests()
    try:
        exporter = InMemoryLogRecordExporter()
        provider = LoggerProvider()
        provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
        _logs.set_logger_provider(provider)
        with tenant_context("acme"):
            record_usage("api.calls", 1)
        (rec,) = exporter.get_finished_logs()
        assert rec.log_record.attributes[TENANT_ID_KEY] == "acme"
    finally:
        _reset_for_tests()


def test_dimensions_are_stringified_none_is_left_out_and_hostile_values_kept_verbatim(otel):
    # tenant ids must be well-formed (TENANT_ID_RE); dimension values and user ids may be anything printable
    with tenant_context("acme.eu:prod@x-1", user_id="用户' OR '1'='1"):
        record_usage("m", 1, n=5, flag=True, skipped=None, sql="'; DROP TABLE x;--", uni="café🦄")
    (rec,) = otel.records()
    attrs = dict(rec.attributes)
    assert attrs["tenantry.usage.dim.n"] == "5"
    assert attrs["tenantry.usage.dim.flag"] == "True"
    assert "tenantry.usage.dim.skipped" not in attrs
    assert attrs["tenantry.usage.dim.sql"] == "'; DROP TABLE x;--"
    assert attrs["tenantry.usage.dim.uni"] == "café🦄"
    assert attrs[TENANT_ID_KEY] == "acme.eu:prod@x-1"
    assert attrs[USER_ID_KEY] == "用户' OR '1'='1"


def test_usage_inside_a_span_carries_its_trace_and_span_ids(otel):
    with tenant_context("acme"):
        with trace.get_tracer("t").start_as_current_span("req") as span:
            record_usage("m", 1)
    (rec,) = otel.records()
    assert rec.trace_id == span.get_span_context().trace_id
    assert rec.span_id == span.get_span_context().span_id


def test_emit_failure_raises_usage_error_naming_the_event_id_for_a_retry(otel):
    class Broken(LogRecordProcessor):
        def on_emit(self, log_record):
            raise RuntimeError("disk full")

        def shutdown(self):
            pass

        def force_flush(self, timeout_millis=30000):
            return True

    otel.providers.logger_provider.add_log_record_processor(Broken())
    with tenant_context("acme"):
        with pytest.raises(UsageError, match="retry with event_id='e-1'"):
            record_usage("m", 1, event_id="e-1")
