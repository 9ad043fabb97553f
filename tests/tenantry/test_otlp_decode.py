"""tenantry.otlp.decode: requests -> the normalized tables, and every hostile input quarantined."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from test_otlp_builders import T0, kv, log_request, metric_request, trace_request

from tenantry import schemas
from tenantry.otlp import OtlpDecodeError, decode_request, parse_request
from tenantry.otlp.decode import record_count

# the shared OTLP examples sit beside the checkout (CI copies shared/ next to its clone)
FIXTURES = next(
    (p for p in (Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "otlp",
                 Path("/work/shared/fixtures/otlp")) if p.is_dir()),
    Path("/work/shared/fixtures/otlp"),
)
TABLES = ("spans", "logs", "metric_points", "usage_events", "quarantine")


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def decode(signal, req, batch="b-1", **kw):
    body = req if isinstance(req, (bytes, str)) else req.SerializeToString()
    out = decode_request(signal, body, batch, **kw)
    assert tuple(out) == TABLES
    for name, table in out.items():
        assert table.schema.equals(schemas.TABLES[name]), name
        assert table.column("ingest_batch").to_pylist() == [batch] * table.num_rows
    return out


def rows(table: pa.Table) -> list[dict]:
    """Rows without the timestamp columns (to_pylist refuses ns timestamps without pandas)."""
    keep = [c for c in table.column_names if not pa.types.is_timestamp(table.schema.field(c).type)]
    return table.select(keep).to_pylist()


def total_rows(out) -> int:
    return sum(t.num_rows for t in out.values())


# -- the shared OTLP/JSON fixtures -------------------------------------------------------------

def test_trace_fixture_decodes_with_lower_case_ids_kind_and_duration():
    out = decode("traces", fixture("trace.json"), content_type="json")
    (span,) = rows(out["spans"])
    assert span["trace_id"] == "5b8efff798038103d269b633813fc60c"
    assert span["span_id"] == "eee19b7ec3c1b174" and span["parent_span_id"] == "eee19b7ec3c1b173"
    assert span["kind"] == "server" and span["status_code"] == "unset"
    assert span["duration_ms"] == 1000.0
    assert span["service_name"] == "my.service" and span["scope_name"] == "my.library"
    assert span["tenant_id"] == schemas.UNATTRIBUTED
    assert span["attributes"] == [("my.span.attr", "some value")]
    assert out["spans"].column("start_time")[0].value == 1544712660000000000


def test_logs_fixture_decodes_every_attribute_value_kind_as_text():
    out = decode("logs", fixture("logs.json"), content_type="json")
    (log,) = rows(out["logs"])
    assert dict(log["attributes"]) == {
        "string.attribute": "some string",
        "boolean.attribute": "true",
        "int.attribute": "10",
        "double.attribute": "637.704",
        "array.attribute": '["many","values"]',
        "map.attribute": '{"some.map.key":"some value"}',
    }
    assert log["body"] == "Example log record" and log["severity_text"] == "Information"
    assert log["trace_id"] == "5b8efff798038103d269b633813fc60c"


def test_metrics_fixture_quarantines_the_bad_histogram_and_keeps_the_rest():
    out = decode("metrics", fixture("metrics.json"), content_type="json")
    points = {r["metric_name"]: r for r in rows(out["metric_points"])}
    assert set(points) == {"my.counter", "my.gauge"}
    assert points["my.counter"]["value"] == 5.0 and points["my.counter"]["is_monotonic"] is True
    assert points["my.counter"]["aggregation_temporality"] == "delta"
    (q,) = rows(out["quarantine"])
    assert q["reason"] == "malformed_record" and q["table"] == "metric_points"
    assert "3 bucket_counts for 1 explicit_bounds" in q["detail"]
    assert json.loads(q["raw"])["metric_name"] == "my.histogram"


# -- protobuf ----------------------------------------------------------------------------------

def test_protobuf_spans_round_trip_every_column():
    req = trace_request([
        {"trace_id": bytes.fromhex("5B8EFFF798038103D269B633813FC60C"), "span_id": b"\x01" * 8,
         "parent_span_id": b"\x02" * 8, "name": "GET /items", "kind": 3, "status": (2, "boom"),
         "start": T0, "end": T0 + 2_345_678, "attrs": {"http.status_code": 503, "retry": True, "ratio": 0.25}},
    ], resource={"host.name": "h1"})
    out = decode("traces", req)
    (span,) = rows(out["spans"])
    assert span == {
        "tenant_id": schemas.UNATTRIBUTED, "tenant_tier": None, "user_id": None, "service_name": "checkout",
        "trace_id": "5b8efff798038103d269b633813fc60c", "span_id": "01" * 8, "parent_span_id": "02" * 8,
        "name": "GET /items", "kind": "client", "status_code": "error", "status_message": "boom",
        "duration_ms": 2.345678, "attributes": [("http.status_code", "503"), ("retry", "true"), ("ratio", "0.25")],
        "resource_attributes": [("service.name", "checkout"), ("host.name", "h1")], "scope_name": "test.lib",
        "sample_weight": 1.0, "ingest_batch": "b-1",
    }
    assert out["spans"].column("start_time")[0].value == T0
    assert out["spans"].column("end_time")[0].value == T0 + 2_345_678


def test_real_sdk_spans_decode(tmp_path):
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "shop", "tenant.id": "acme"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("shop.web")
    with tracer.start_as_current_span("parent", attributes={"user.id": "u-1"}):
        with tracer.start_as_current_span("child", attributes={"tenant.id": "globex", "items": [1, 2]}):
            pass
    sdk_spans = exporter.get_finished_spans()
    out = decode("traces", encode_spans(sdk_spans))
    by_name = {r["name"]: r for r in rows(out["spans"])}
    assert by_name["child"]["tenant_id"] == "globex" and by_name["parent"]["tenant_id"] == "acme"
    assert by_name["parent"]["user_id"] == "u-1"
    assert by_name["child"]["parent_span_id"] == by_name["parent"]["span_id"]
    assert by_name["child"]["span_id"] == format(sdk_spans[0].context.span_id, "016x")
    assert by_name["child"]["trace_id"] == format(sdk_spans[0].context.trace_id, "032x")
    assert dict(by_name["child"]["attributes"])["items"] == "[1,2]"
    assert by_name["child"]["kind"] == "internal" and by_name["child"]["scope_name"] == "shop.web"


def test_standard_message_and_bytes_decode_the_same():
    req = trace_request([{"attrs": {"k": "v"}}])
    a = decode_request("traces", req, "b")
    b = decode_request("traces", req.SerializeToString(), "b")
    assert a["spans"].equals(b["spans"])


def test_tenant_precedence_record_then_resource_then_unattributed():
    req = trace_request([
        {"attrs": {"tenant.id": "rec", "tenant.tier": "gold", "user.id": "u1"}},
        {"attrs": {}},
        {"attrs": {"tenant.id": ""}},  # empty counts as absent
    ], resource={"tenant.id": "res", "tenant.tier": "free"})
    got = [(r["tenant_id"], r["tenant_tier"], r["user_id"]) for r in rows(decode("traces", req)["spans"])]
    assert got == [("rec", "gold", "u1"), ("res", "free", None), ("res", "free", None)]
    bare = trace_request([{"attrs": {}}])
    assert rows(decode("traces", bare)["spans"])[0]["tenant_id"] == schemas.UNATTRIBUTED


def test_sql_looking_and_unicode_tenant_ids_pass_through_untouched():
    hostile = "acme'; DROP TABLE spans; --"
    req = trace_request([{"attrs": {"tenant.id": hostile, "ключ🔑": "値💥", "nul\x00key": "a\x00b"}}])
    (span,) = rows(decode("traces", req)["spans"])
    assert span["tenant_id"] == hostile
    assert dict(span["attributes"])["ключ🔑"] == "値💥"
    assert dict(span["attributes"])["nul\x00key"] == "a\x00b"


def test_attribute_values_follow_the_text_rules():
    req = trace_request([{"attrs": {
        "s": "x", "t": True, "f": False, "i": -42, "big": 2**63 - 1, "d": 0.1, "nan": float("nan"),
        "b": b"\x00\xff", "arr": ["a", 1, 2.5, None], "kv": {"n": {"deep": [True]}}, "none": None, "empty": "",
    }}])
    attrs = dict(rows(decode("traces", req)["spans"])[0]["attributes"])
    assert attrs == {
        "s": "x", "t": "true", "f": "false", "i": "-42", "big": str(2**63 - 1), "d": "0.1", "nan": "nan",
        "b": base64.b64encode(b"\x00\xff").decode(), "arr": '["a",1,2.5,null]', "kv": '{"n":{"deep":[true]}}',
        "none": None, "empty": "",
    }


def test_duplicate_attribute_keys_keep_the_last_value_so_duckdb_can_read_the_map():
    req = trace_request([{"attrs": {}}])
    span = req.resource_spans[0].scope_spans[0].spans[0]
    span.attributes.extend([kv("k", "first"), kv("tenant.id", "a"), kv("k", "last"), kv("tenant.id", "b")])
    spans = decode("traces", req)["spans"]
    assert rows(spans)[0]["attributes"] == [("k", "last"), ("tenant.id", "b")]
    assert rows(spans)[0]["tenant_id"] == "b"
    assert duckdb.sql("select attributes['k'] from spans").fetchall() == [("last",)]


def test_many_spans_use_the_vectorized_attribute_path_and_match_per_span_values():
    specs = [{"attrs": {"tenant.id": f"t{i % 7}", "n": i, "x": "é" * (i % 300), "d": i / 3, "ok": i % 2 == 0}}
             for i in range(500)]
    out = decode("traces", trace_request(specs, resources=3))
    assert out["spans"].num_rows == 1500 and out["quarantine"].num_rows == 0
    for i, r in enumerate(rows(out["spans"])[:500]):
        assert dict(r["attributes"]) == {"tenant.id": f"t{i % 7}", "n": str(i), "x": "é" * (i % 300),
                                         "d": repr(i / 3), "ok": "true" if i % 2 == 0 else "false"}
        assert r["tenant_id"] == f"t{i % 7}"


def test_one_megabyte_attribute_value_survives():
    big = "x" * (1 << 20)
    (span,) = rows(decode("traces", trace_request([{"attrs": {"big": big}}]))["spans"])
    assert dict(span["attributes"])["big"] == big


def test_empty_ids_are_null_and_unknown_enum_values_are_null_not_a_crash():
    (span,) = rows(decode("traces", trace_request([{"trace_id": b"", "span_id": b"", "kind": 99}]))["spans"])
    assert span["trace_id"] is None and span["span_id"] is None and span["parent_span_id"] is None
    assert span["kind"] is None


def test_timestamp_past_int64_is_quarantined_with_the_rest_kept():
    req = trace_request([{"start": 2**64 - 1}, {}])
    out = decode("traces", req)
    assert out["spans"].num_rows == 1
    (q,) = rows(out["quarantine"])
    assert q["reason"] == "malformed_record" and "int64" in q["detail"]


def test_malformed_attribute_bytes_quarantine_only_that_span():
    req = trace_request([{"attrs": {"a": "1"}}, {"attrs": {"b": "2"}}] + [{"attrs": {"c": str(i)}} for i in range(60)])
    body = bytearray(req.SerializeToString())
    # corrupt the UTF-8 of the second span's value "2" -> 0xff (lengths unchanged)
    needle = bytes(kv("b", "2").SerializeToString())
    at = bytes(body).index(needle)
    body[at + len(needle) - 1] = 0xFF
    out = decode("traces", bytes(body))
    assert out["spans"].num_rows == 61
    (q,) = rows(out["quarantine"])
    assert q["table"] == "spans" and q["reason"] == "malformed_record" and "UTF-8" in q["detail"]


# -- logs and metrics --------------------------------------------------------------------------

def test_log_body_kinds_and_severity():
    req = log_request([{"body": "plain"}, {"body": {"a": [1, "x"]}}, {}, {"body": 3.5, "severity": 17}])
    logs = rows(decode("logs", req)["logs"])
    assert [r["body"] for r in logs] == ["plain", '{"a":[1,"x"]}', None, "3.5"]
    assert logs[3]["severity_number"] == 17 and logs[0]["service_name"] == "billing"


def test_metric_point_kinds_become_one_row_each():
    req = metric_request([
        {"name": "g", "kind": "gauge", "points": [{"as_int": 7}, {"as_double": 1.5}]},
        {"name": "s", "kind": "sum", "temporality": 1, "points": [{"as_double": 2.0, "attrs": {"tenant.id": "t"}}]},
        {"name": "h", "kind": "histogram", "points": [
            {"count": 3, "sum": 6.0, "min": 1.0, "max": 3.0, "bucket_counts": [1, 2], "explicit_bounds": [2.0]}]},
        {"name": "e", "kind": "exponential_histogram", "points": [{"count": 4, "sum": 8.0, "scale": 2}]},
        {"name": "q", "kind": "summary", "points": [{"count": 5, "sum": 10.0}]},
    ], resource={"tenant.id": "res", "tenant.tier": "pro"})
    out = decode("metrics", req)
    assert out["quarantine"].num_rows == 0
    got = [(r["metric_name"], r["type"], r["value"], r["count"], r["sum"], r["min"], r["max"], r["bucket_counts"],
            r["explicit_bounds"], r["aggregation_temporality"], r["tenant_id"]) for r in rows(out["metric_points"])]
    assert got == [
        ("g", "gauge", 7.0, None, None, None, None, None, None, None, "res"),
        ("g", "gauge", 1.5, None, None, None, None, None, None, None, "res"),
        ("s", "sum", 2.0, None, None, None, None, None, None, "delta", "t"),
        ("h", "histogram", None, 3, 6.0, 1.0, 3.0, [1, 2], [2.0], "cumulative", "res"),
        ("e", "exponential_histogram", None, 4, 8.0, None, None, None, None, "cumulative", "res"),
        ("q", "summary", None, 5, 10.0, None, None, None, None, None, "res"),
    ]


# -- hostile bodies ----------------------------------------------------------------------------

HOSTILE = {
    "truncated protobuf": trace_request([{"attrs": {"a": "b" * 100}}]).SerializeToString()[:-7],
    "random bytes": os.urandom(4096),
    "garbage varint": b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_undecodable_protobuf_is_one_malformed_request_row_and_parse_request_raises(name):
    body = HOSTILE[name]
    out = decode("traces", body)
    assert total_rows(out) == 1
    (q,) = rows(out["quarantine"])
    assert q["table"] == "request" and q["reason"] == "malformed_request"
    assert base64.b64decode(q["raw"]) == body and q["detail"]
    with pytest.raises(OtlpDecodeError, match="not a valid protobuf"):
        parse_request("traces", body)


def test_empty_protobuf_body_is_an_empty_request_not_an_error():
    assert total_rows(decode("traces", b"")) == 0
    assert len(parse_request("traces", b"").resource_spans) == 0


@pytest.mark.parametrize("body,match", [
    (b"[1, 2]", "must be a JSON object"),
    (b"", "not valid JSON"),
    (b'{"resourceSpans": [', "not valid JSON"),
    (b'"just a string"', "must be a JSON object"),
    (b'{"resourceLogs": []}', "traces endpoint|logs endpoint"),
    (b"[" * 100_000 + b"]" * 100_000, "JSON"),
    ('{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}'.encode(), "traceId"),
    ('{"resourceSpans":[{"scopeSpans":[{"spans":[{"spanId":"ZZZZZZZZZZZZZZZZ"}]}]}]}'.encode(), "non-hex"),
    (b'\xff\xfe{}', "JSON"),
])
def test_bad_json_raises_clearly_and_decodes_to_one_quarantine_row(body, match):
    with pytest.raises(OtlpDecodeError, match=match):
        parse_request("traces", body, "json")
    out = decode("traces", body, content_type="json")
    assert total_rows(out) == 1 and out["quarantine"].column("reason")[0].as_py() == "malformed_request"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _nested_kvlist_attribute(depth: int) -> bytes:
    """Serialized KeyValue ``deep`` = {"k": {"k": ... "leaf"}}, built on the wire (upb refuses to build it)."""
    inner = b"\x0a\x04leaf"
    for _ in range(depth):
        pair = b"\x0a\x01k\x12" + _varint(len(inner)) + inner
        kvlist = b"\x0a" + _varint(len(pair)) + pair
        inner = b"\x32" + _varint(len(kvlist)) + kvlist
    return b"\x0a\x04deep\x12" + _varint(len(inner)) + inner


@pytest.mark.parametrize("depth", [70, 150])
def test_deeply_nested_kvlist_quarantines_that_span_only(depth):
    from tenantry.otlp.messages import LITE_CLASSES

    lite = LITE_CLASSES["traces"].FromString(trace_request([{}, {}]).SerializeToString())
    lite.resource_spans[0].scope_spans[0].spans[0].attributes.append(_nested_kvlist_attribute(depth))
    out = decode("traces", lite.SerializeToString())
    assert out["spans"].num_rows == 1
    (q,) = rows(out["quarantine"])
    assert q["table"] == "spans" and q["reason"] == "malformed_record" and "attribute #0" in q["detail"]
    if depth > 100:  # past upb's nesting limit the strict parse refuses the whole request
        with pytest.raises(OtlpDecodeError):
            parse_request("traces", lite.SerializeToString())


def test_moderately_nested_kvlist_decodes_as_json():
    from tenantry.otlp.messages import LITE_CLASSES

    lite = LITE_CLASSES["traces"].FromString(trace_request([{}]).SerializeToString())
    lite.resource_spans[0].scope_spans[0].spans[0].attributes.append(_nested_kvlist_attribute(30))
    (span,) = rows(decode("traces", lite.SerializeToString())["spans"])
    value = json.loads(dict(span["attributes"])["deep"])
    for _ in range(30):
        value = value["k"]
    assert value == "leaf"


def test_unknown_signal_name_is_a_programming_error():
    with pytest.raises(OtlpDecodeError, match="unknown OTLP signal"):
        decode_request("profiles", b"", "b")


def test_every_record_in_is_accounted_for_in_rows_out():
    specs = [{"attrs": {"tenant.id": "t"}}, {"start": 2**64 - 2}, {"attrs": {"x": 1}}] * 30
    req = trace_request(specs, resources=2)
    out = decode("traces", req)
    assert out["spans"].num_rows + out["quarantine"].num_rows == record_count("traces", req) == 180
    mreq = metric_request([{"name": "h", "kind": "histogram", "points": [
        {"count": 1, "bucket_counts": [1, 0, 0], "explicit_bounds": [1.0]}, {"count": 1}]}])
    mout = decode("metrics", mreq)
    assert mout["metric_points"].num_rows + mout["quarantine"].num_rows == record_count("metrics", mreq) == 2

