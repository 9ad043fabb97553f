"""OTLP/JSON request bodies -> protobuf messages.

OTLP/JSON is protobuf's canonical JSON mapping with the differences the OTLP specification
lists, handled here:

- ``traceId`` / ``spanId`` / ``parentSpanId`` (spans, links, log records, exemplars) are hex
  strings, not base64; either case is accepted, anything else is an error naming the field;
- enum values may be integers, int64 values may be strings or numbers (protobuf's parser already
  accepts both), keys are lowerCamelCase and the proto (snake_case) names are accepted too;
- unknown fields are ignored, as the specification requires of receivers. A top-level key that
  belongs to another signal (``resourceLogs`` posted as traces) is an error, not silently empty.
"""

from __future__ import annotations

import base64
import binascii
import json

from google.protobuf import json_format

from tenantry.otlp.messages import REQUEST_CLASSES, RESOURCE_FIELD, OtlpDecodeError

_ID_BYTES = {"traceId": 16, "trace_id": 16, "spanId": 8, "span_id": 8, "parentSpanId": 8, "parent_span_id": 8}
_SNAKE = {
    "resourceSpans": "resource_spans", "scopeSpans": "scope_spans", "resourceLogs": "resource_logs",
    "scopeLogs": "scope_logs", "logRecords": "log_records", "resourceMetrics": "resource_metrics",
    "scopeMetrics": "scope_metrics", "dataPoints": "data_points", "exponentialHistogram": "exponential_histogram",
}
_PATHS = {
    "traces": ("resourceSpans", "scopeSpans", "spans"),
    "logs": ("resourceLogs", "scopeLogs", "logRecords"),
    "metrics": ("resourceMetrics", "scopeMetrics", "metrics"),
}
_METRIC_DATA = ("gauge", "sum", "histogram", "exponentialHistogram", "summary")


def _items(obj: dict, camel: str, where: str):
    """(path, element) for each dict in the list ``obj[camel]`` (or its snake_case spelling)."""
    snake = _SNAKE.get(camel, camel)
    for key in (camel,) if snake == camel else (camel, snake):
        seq = obj.get(key)
        if isinstance(seq, list):
            for i, item in enumerate(seq):
                if isinstance(item, dict):
                    yield f"{where}.{key}[{i}]", item


def _fix_ids(obj: dict, where: str) -> None:
    for key, nbytes in _ID_BYTES.items():
        if key not in obj:
            continue
        value = obj[key]
        if value is None or value == "":
            obj[key] = ""
            continue
        kind = "trace" if nbytes == 16 else "span"
        if not isinstance(value, str) or len(value) != 2 * nbytes:
            raise OtlpDecodeError(
                f"{where}.{key}: {str(value)[:80]!r} is not a {2 * nbytes}-digit hex {kind} id; "
                f"OTLP/JSON ids are hex strings (not base64), e.g. {'0' * (2 * nbytes - 1)}1")
        try:
            obj[key] = base64.b64encode(bytes.fromhex(value)).decode("ascii")
        except ValueError:
            raise OtlpDecodeError(f"{where}.{key}: {value!r} contains non-hex characters") from None


def _normalize_ids(signal: str, doc: dict) -> None:
    top, scope_key, record_key = _PATHS[signal]
    for rp, res in _items(doc, top, "$"):
        for sp, scope in _items(res, scope_key, rp):
            for rec_path, rec in _items(scope, record_key, sp):
                if signal == "metrics":
                    for data_key in _METRIC_DATA:
                        for key in {data_key, _SNAKE.get(data_key, data_key)}:
                            data = rec.get(key)
                            if isinstance(data, dict):
                                for pp, point in _items(data, "dataPoints", f"{rec_path}.{key}"):
                                    for ep, ex in _items(point, "exemplars", pp):
                                        _fix_ids(ex, ep)
                    continue
                _fix_ids(rec, rec_path)
                for lp, link in _items(rec, "links", rec_path):
                    _fix_ids(link, lp)


def load_json(body: bytes | str):
    """``json.loads`` with OtlpDecodeError for anything that is not JSON."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise OtlpDecodeError(f"body is not valid JSON: {e}") from None
    except RecursionError:
        raise OtlpDecodeError("body is not usable JSON: nested too deeply") from None


def parse_json(signal: str, body: bytes | str):
    """Parse an OTLP/JSON Export*ServiceRequest body; OtlpDecodeError saying what is wrong."""
    return parse_json_doc(signal, load_json(body))


def parse_json_doc(signal: str, doc):
    """Like :func:`parse_json` for an already loaded JSON document (it is modified in place)."""
    if not isinstance(doc, dict):
        raise OtlpDecodeError(
            f"OTLP/JSON body must be a JSON object with {RESOURCE_FIELD[signal]!r}, got a JSON {type(doc).__name__}")
    for other, field in RESOURCE_FIELD.items():
        if other != signal and (field in doc or _SNAKE[field] in doc):
            raise OtlpDecodeError(
                f"body has {field!r}, which is {other}, but was sent as {signal}; "
                f"send it to the {other} endpoint (expected {RESOURCE_FIELD[signal]!r})")
    _normalize_ids(signal, doc)
    message = REQUEST_CLASSES[signal]()
    try:
        json_format.ParseDict(doc, message, ignore_unknown_fields=True)
    except json_format.ParseError as e:
        raise OtlpDecodeError(f"body is not a valid OTLP/JSON {signal} request: {e}") from None
    except (RecursionError, binascii.Error, TypeError, ValueError) as e:
        raise OtlpDecodeError(f"body is not a valid OTLP/JSON {signal} request: {e}") from None
    return message


def detect_signal(doc) -> str | None:
    """The signal of a loaded OTLP/JSON document from its top-level key (None if not exactly one)."""
    if not isinstance(doc, dict):
        return None
    found = [s for s, f in RESOURCE_FIELD.items() if f in doc or _SNAKE[f] in doc]
    return found[0] if len(found) == 1 else None
