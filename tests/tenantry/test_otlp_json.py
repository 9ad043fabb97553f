"""OTLP/JSON parsing: the ways it differs from protobuf's canonical JSON mapping."""

from __future__ import annotations

import json

import pytest

from tenantry.otlp import OtlpDecodeError, decode_request, parse_request


def body(doc) -> bytes:
    return json.dumps(doc).encode()


def span_doc(**span):
    return {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}


def test_hex_ids_in_either_case_become_the_right_bytes():
    msg = parse_request("traces", body(span_doc(traceId="5B8EFFF798038103d269b633813fc60c",
                                                spanId="EEE19B7EC3C1B174", parentSpanId="")), "json")
    span = msg.resource_spans[0].scope_spans[0].spans[0]
    assert span.trace_id.hex() == "5b8efff798038103d269b633813fc60c"
    assert span.span_id == bytes.fromhex("eee19b7ec3c1b174") and span.parent_span_id == b""


def test_snake_case_names_enum_integers_and_strings_and_int64_strings_are_accepted():
    doc = {"resource_spans": [{"scope_spans": [{"spans": [
        {"trace_id": "00" * 15 + "01", "span_id": "00" * 7 + "02", "kind": "SPAN_KIND_CLIENT",
         "start_time_unix_nano": "1544712660000000000", "end_time_unix_nano": 1544712661000000000,
         "status": {"code": 2},
         "attributes": [{"key": "n", "value": {"intValue": "9007199254740993"}}]},
        {"kind": 4},
    ]}]}]}
    out = decode_request("traces", body(doc), "b", content_type="json")
    spans = out["spans"].drop_columns(["start_time", "end_time"]).to_pylist()
    assert [s["kind"] for s in spans] == ["client", "producer"]
    assert spans[0]["status_code"] == "error" and spans[0]["duration_ms"] == 1000.0
    assert spans[0]["attributes"] == [("n", "9007199254740993")]  # no float rounding of int64


def test_link_and_exemplar_ids_are_hex_too():
    doc = span_doc(traceId="ab" * 16, spanId="cd" * 8, links=[{"traceId": "EF" * 16, "spanId": "01" * 8}])
    link = parse_request("traces", body(doc), "json").resource_spans[0].scope_spans[0].spans[0].links[0]
    assert link.trace_id == bytes.fromhex("ef" * 16)
    mdoc = {"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "g", "gauge": {"dataPoints": [
        {"asInt": "3", "exemplars": [{"traceId": "AB" * 16, "spanId": "CD" * 8, "asDouble": 1}]}]}}]}]}]}
    msg = parse_request("metrics", body(mdoc), "json")
    ex = msg.resource_metrics[0].scope_metrics[0].metrics[0].gauge.data_points[0].exemplars[0]
    assert ex.span_id == bytes.fromhex("cd" * 8)


def test_unknown_fields_are_ignored_as_the_spec_requires():
    doc = span_doc(name="x", futureField={"a": 1})
    doc["somethingNew"] = True
    msg = parse_request("traces", body(doc), "json")
    assert msg.resource_spans[0].scope_spans[0].spans[0].name == "x"


@pytest.mark.parametrize("ids,match", [
    ({"traceId": "abc"}, "32-digit hex trace id"),
    ({"spanId": "W47/95gDgQM="}, "16-digit hex span id"),
    ({"traceId": 12345}, "hex trace id"),
    ({"parentSpanId": "gg" * 8}, "non-hex"),
])
def test_bad_ids_name_the_field_and_what_is_expected(ids, match):
    with pytest.raises(OtlpDecodeError, match=match) as err:
        parse_request("traces", body(span_doc(**ids)), "json")
    assert "spans[0]" in str(err.value)


def test_wrong_value_types_are_clear_errors():
    with pytest.raises(OtlpDecodeError, match="not a valid OTLP/JSON traces request"):
        parse_request("traces", body(span_doc(startTimeUnixNano="yesterday")), "json")
    with pytest.raises(OtlpDecodeError, match="not a valid OTLP/JSON traces request"):
        parse_request("traces", body({"resourceSpans": {"not": "a list"}}), "json")


def test_body_for_another_signal_is_refused_not_silently_empty():
    with pytest.raises(OtlpDecodeError, match="send it to the metrics endpoint"):
        parse_request("logs", body({"resourceMetrics": []}), "json")


def test_content_type_accepts_mime_types_and_refuses_others():
    assert parse_request("traces", b"{}", "application/json; charset=utf-8").resource_spans == []
    with pytest.raises(OtlpDecodeError, match="unsupported content type"):
        parse_request("traces", b"{}", "text/plain")
