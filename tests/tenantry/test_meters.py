"""Meters: the safe filter language, meter validation, and usage derived from telemetry."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tenantry import meters, schemas
from tenantry.config import Meter

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 10, 12, tzinfo=UTC)


def spans(rows: list[dict]) -> pa.Table:
    base = {"tenant_id": "acme", "service_name": "api", "trace_id": None, "span_id": None, "kind": "server",
            "name": "GET", "status_code": "unset", "start_time": T0, "end_time": T0, "duration_ms": 1.0,
            "attributes": [], "resource_attributes": [], "sample_weight": 1.0, "ingest_batch": "b1"}
    rows = [{**base, **r} for r in rows]
    cols = {k: [r[k] for r in rows] for k in base}
    cols["start_time"] = pa.array(cols["start_time"], schemas.TS)
    cols["end_time"] = pa.array(cols["end_time"], schemas.TS)
    for m in ("attributes", "resource_attributes"):
        cols[m] = pa.array([list(v.items()) if isinstance(v, dict) else v for v in cols[m]], schemas.ATTRS)
    return schemas.conform("spans", pa.table(cols))


def matches(expr: str, rows: list[dict], source: str = "spans") -> list[bool]:
    return meters.mask(meters.parse_filter(expr, source), spans(rows)).to_pylist()


ROWS = [
    {"kind": "server", "attributes": {"http.route": "/api/items", "code": "503"}, "duration_ms": 12.5},
    {"kind": "client", "attributes": {"http.route": "/api/x"}, "duration_ms": 3.0},
    {"kind": "server", "attributes": {"http.route": "/health", "code": "abc"}, "duration_ms": None},
    {"kind": None, "attributes": {}, "resource_attributes": {"region": "eu"}},
]


@pytest.mark.parametrize("expr, expected", [
    ('span.kind == "server" and attributes["http.route"] startswith "/api/"', [True, False, False, False]),
    ('kind != "server"', [False, True, False, False]),  # null never matches, not even !=
    ('attributes["http.route"] endswith "x" or duration_ms > 10', [True, True, False, False]),
    ('attributes["http.route"] contains "ealt"', [False, False, True, False]),
    ('attributes["code"] >= 500', [True, False, False, False]),  # text read as a number
    ('duration_ms <= 3', [False, True, False, True]),
    ('duration_ms < 3.5 and duration_ms >= -1', [False, True, False, True]),
    ('kind in ["client", "internal"]', [False, True, False, False]),
    ('kind not in ["client"]', [True, False, True, False]),
    ('not (kind == "client")', [True, False, True, False]),
    ('resource["region"] == "eu"', [False, False, False, True]),
    ('kind == "server" or kind == "client" and duration_ms > 100', [True, False, True, False]),  # and binds tighter
    ("kind == 'server'", [True, False, True, False]),
])
def test_filter_operators(expr, expected):
    assert matches(expr, ROWS) == expected


@pytest.mark.parametrize("expr, message", [
    ("kind ==", "position 7"),
    ('kind = "x"', "unexpected character '=' at position 5"),
    ("bogus == 1", "unknown column 'bogus' at position 0"),
    ('log.body == "x"', "'log.' names a logs field"),
    ('start_time == "x"', "cannot compare"),
    ('attributes[1] == "x"', "needs a string key"),
    ('dimensions["k"] == "x"', "not a map of spans"),
    ('kind startswith name', "needs a string literal"),
    ("kind", "not a condition"),
    ('__import__("os").system("x")', "position"),
    ('"unterminated', "unexpected character"),
    ("(" * 200 + 'kind == "x"' + ")" * 200, "nested deeper"),
    ("kind == 'x' or " * 400 + "kind == 'y'", "at most 4096"),
    ("   ", "empty filter"),
])
def test_filter_errors_name_the_meter_and_position(expr, message):
    with pytest.raises(meters.MeterError, match=r"meters\[3\] \(m\)\.filter") as e:
        meters.parse_filter(expr, "spans", "meters[3] (m).filter")
    assert message in str(e.value)


def test_unicode_attribute_keys_and_values():
    rows = [{"attributes": {"ключ": "значение 🚀"}}]
    assert matches('attributes["ключ"] endswith "🚀"', rows) == [True]


def test_logs_and_metric_points_sources():
    logs = schemas.conform("logs", pa.table({"tenant_id": ["a"], "service_name": ["s"], "body": ["disk full"],
                                             "ingest_batch": ["b"]}))
    assert meters.mask(meters.parse_filter('log.body contains "full"', "logs"), logs).to_pylist() == [True]
    with pytest.raises(meters.MeterError, match="unknown column"):
        meters.parse_filter('metric_name == "x"', "logs")


@given(st.lists(st.tuples(st.sampled_from(["server", "client", None]), st.one_of(st.none(), st.floats(-1e6, 1e6))),
                min_size=1, max_size=30),
       st.sampled_from(["server", "client"]), st.floats(-1e6, 1e6))
@settings(max_examples=60, deadline=None)
def test_filter_agrees_with_a_python_reference(rows, kind, bound):
    expr = f'kind == "{kind}" and not duration_ms > {bound!r} or kind == "none"'
    got = matches(expr, [{"kind": k, "duration_ms": d} for k, d in rows])
    assert got == [bool(k == kind and d is not None and not d > bound) for k, d in rows]


# -- meter definitions --------------------------------------------------------------------------

@pytest.mark.parametrize("meter, message", [
    (Meter(name="m", filter='kind == "x"'), "usage_events meter counts every event"),
    (Meter(name="m", aggregation="unique_count"), "unique_count needs a telemetry source"),
    (Meter(name="m", source="spans", aggregation="sum"), "needs a value"),
    (Meter(name="m", source="spans", aggregation="count", value="duration_ms"), "remove value"),
    (Meter(name=" m", source="spans", aggregation="count"), "whitespace"),
    (Meter(name="m", source="spans", aggregation="count", group_by=["kind", "span.kind"]), "listed twice"),
    (Meter(name="m", source="spans", aggregation="sum", value="1 + 2"), "unexpected"),
])
def test_invalid_meters_are_rejected_with_the_key(meter, message):
    with pytest.raises(meters.MeterError, match=r"meters\[0\]") as e:
        meters.compile_meters([meter])
    assert message in str(e.value)


# -- derived usage ------------------------------------------------------------------------------

REQ = Meter(name="api.requests", source="spans", aggregation="count", filter='kind == "server"',
            group_by=['attributes["http.route"]', "service_name"], period="hour")
BYTES = Meter(name="bytes", unit="By", source="spans", aggregation="sum", value='attributes["bytes"]')


def test_derived_usage_is_usage_events_with_source_derived_and_evidence():
    data = spans([{"trace_id": "t" * 32, "span_id": "s" * 16, "attributes": {"http.route": "/a"}}])
    out = meters.derive_usage("spans", data, [REQ])
    assert out.schema == schemas.USAGE_EVENTS
    [row] = out.to_pylist()
    assert (row["source"], row["quantity"], row["trace_id"], row["span_id"]) == \
        ("derived", Decimal(1), "t" * 32, "s" * 16)
    assert row["dimensions"] == [("http.route", "/a"), ("service_name", "api")]


def test_deriving_twice_gives_the_same_event_ids_and_meters_differ():
    data = spans([{"trace_id": "t1", "span_id": f"s{i}", "attributes": {"bytes": "1"}} for i in range(3)])
    a = meters.derive_usage("spans", data, [REQ, BYTES]).column("event_id").to_pylist()
    b = meters.derive_usage("spans", data, [REQ, BYTES]).column("event_id").to_pylist()
    assert a == b and len(set(a)) == 6


def test_span_without_ids_gets_a_content_id():
    data = spans([{"name": "a"}, {"name": "b"}])
    ids = meters.derive_usage("spans", data, [REQ]).column("event_id").to_pylist()
    assert len(set(ids)) == 2 and all(len(i) == 32 for i in ids)


def test_sum_values_are_exact_and_unbillable_values_are_quarantined():
    data = spans([{"span_id": str(i), "trace_id": "t", "attributes": {"bytes": v}} if v is not None
                  else {"span_id": str(i), "trace_id": "t"} for i, v in enumerate(["0.1", "-2", "NaN", "1e40", None, "7"])])
    out = meters.derive("spans", data, [BYTES])
    assert out.usage.column("quantity").to_pylist() == [Decimal("0.1"), Decimal(7)]
    assert out.quarantined.column("reason").to_pylist() == ["invalid_quantity"] * 3


def test_float_column_values_become_decimals_rounded_to_nine_places():
    m = Meter(name="ms", source="spans", aggregation="sum", value="duration_ms")
    out = meters.derive_usage("spans", spans([{"duration_ms": 0.1 + 0.2, "span_id": "1", "trace_id": "t"}]), [m])
    assert out.column("quantity").to_pylist() == [Decimal("0.3")]


def test_unique_count_ids_collapse_the_same_value_in_a_period():
    m = Meter(name="users", source="spans", aggregation="unique_count", value="attributes[\"user\"]", period="day")
    data = spans([{"span_id": str(i), "trace_id": "t", "attributes": {"user": u}} for i, u in enumerate("aab")])
    ids = meters.derive_usage("spans", data, [m]).column("event_id").to_pylist()
    assert ids[0] == ids[1] != ids[2]


def test_meters_of_other_sources_and_empty_batches_derive_nothing():
    assert meters.derive_usage("logs", spans([{}]), [REQ]).num_rows == 0
    assert meters.derive_usage("spans", spans([{}]).slice(0, 0), [REQ]).num_rows == 0
    assert meters.derive_usage("spans", spans([{"kind": "client"}]), [REQ]).num_rows == 0
