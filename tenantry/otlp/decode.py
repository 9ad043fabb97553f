"""OTLP requests -> the normalized tables (``tenantry.schemas``).

Two entry points:

- :func:`parse_request` is strict: it parses an Export{Trace,Logs,Metrics}ServiceRequest from
  protobuf or OTLP/JSON and raises :class:`OtlpDecodeError` saying what is wrong, so the
  receiver can answer 400.
- :func:`decode_request` never raises on bad data: it returns all five tables, and whatever
  could not be decoded is a quarantine row with a reason (a whole undecodable body is one row,
  ``table="request"``, ``reason=malformed_request``, the bytes in ``raw`` as base64).

Accounting: every span, log record and data point of a decodable request ends up in exactly one
of ``spans`` / ``logs`` / ``usage_events`` / ``metric_points`` / ``quarantine``.

Protobuf trace bodies take the numpy span decoder (:func:`tenantry.otlp.spans.decode_span_bytes`)
when it is sure of the answer, else the upb path; both give the same tables.
"""

from __future__ import annotations

import base64
import logging

import pyarrow as pa
from google.protobuf.message import DecodeError, Message

from tenantry import schemas
from tenantry.otlp import columns as C
from tenantry.otlp.jsonfmt import parse_json
from tenantry.otlp.logs import decode_log_bytes, decode_logs
from tenantry.otlp.messages import LITE_CLASSES, REQUEST_CLASSES, OtlpDecodeError, normalize_signal
from tenantry.otlp.metrics import decode_metrics
from tenantry.otlp.spans import decode_span_bytes, decode_spans

logger = logging.getLogger(__name__)

#: how much of an undecodable body is kept (base64) in its quarantine row
MAX_RAW_BYTES = 1 << 20

_CONTENT_TYPES = {
    "protobuf": "protobuf", "application/x-protobuf": "protobuf", "pb": "protobuf", "proto": "protobuf",
    "json": "json", "application/json": "json",
}


def _content_type(content_type: str) -> str:
    key = (content_type or "protobuf").split(";")[0].strip().lower()
    if key not in _CONTENT_TYPES:
        raise OtlpDecodeError(f"unsupported content type {content_type!r}; use application/x-protobuf or application/json")
    return _CONTENT_TYPES[key]


def parse_request(signal: str, body: bytes, content_type: str = "protobuf") -> Message:
    """Parse one OTLP request body into the standard Export*ServiceRequest message.

    ``content_type``: ``"protobuf"`` / ``"json"`` (or their MIME types). Raises OtlpDecodeError
    naming the problem for malformed protobuf, invalid JSON, a wrong top-level shape, bad hex ids.
    """
    signal = normalize_signal(signal)
    kind = _content_type(content_type)
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise OtlpDecodeError(f"request body must be bytes, got {type(body).__name__}")
    if kind == "json":
        return parse_json(signal, bytes(body))
    try:
        return REQUEST_CLASSES[signal].FromString(bytes(body))
    except DecodeError as e:
        raise OtlpDecodeError(f"body is not a valid protobuf OTLP {signal} request ({len(body)} bytes): {e}") from None
    except RecursionError:
        raise OtlpDecodeError(f"body is not a usable protobuf OTLP {signal} request: nested too deeply") from None


def empty_tables() -> dict[str, pa.Table]:
    """All five tables, empty, with their schemas."""
    return {name: C.empty(name) for name in schemas.TABLES}


def malformed_request(ingest_batch: str, body: bytes | None, detail: str) -> dict[str, pa.Table]:
    """The tables for an input that could not be decoded at all: one quarantine row."""
    raw = None
    if body is not None:
        kept = bytes(body[:MAX_RAW_BYTES])
        raw = base64.b64encode(kept).decode("ascii")
        if len(body) > MAX_RAW_BYTES:
            detail += f" (raw holds the first {MAX_RAW_BYTES} of {len(body)} bytes)"
    out = empty_tables()
    out["quarantine"] = C.request_quarantine(ingest_batch, raw, detail)
    return out


def _lite(signal: str, body_or_message, content_type: str):
    """The lite message for a body or message; OtlpDecodeError if it cannot be parsed."""
    if isinstance(body_or_message, LITE_CLASSES[signal]):
        return body_or_message
    if isinstance(body_or_message, Message):
        if body_or_message.DESCRIPTOR.full_name != REQUEST_CLASSES[signal].DESCRIPTOR.full_name:
            raise OtlpDecodeError(
                f"got a {body_or_message.DESCRIPTOR.full_name} message for signal {signal}")
        body = body_or_message.SerializeToString()
    elif _content_type(content_type) == "json":
        body = parse_request(signal, body_or_message, "json").SerializeToString()
    else:
        body = bytes(body_or_message)
    try:
        return LITE_CLASSES[signal].FromString(body)
    except DecodeError as e:
        raise OtlpDecodeError(f"body is not a valid protobuf OTLP {signal} request ({len(body)} bytes): {e}") from None
    except RecursionError:
        raise OtlpDecodeError(f"body is not a usable protobuf OTLP {signal} request: nested too deeply") from None


#: the decoders tried first on protobuf bodies (None: the lite-class path below takes the body),
#: and the tables they return
_FAST = {
    "traces": (decode_span_bytes, ("spans", "quarantine")),
    "logs": (decode_log_bytes, ("logs", "usage_events", "quarantine")),
}


def decode_request(signal: str, body_or_message, ingest_batch: str,
                   content_type: str = "protobuf") -> dict[str, pa.Table]:
    """Decode one request into ``{"spans", "logs", "metric_points", "usage_events", "quarantine"}``.

    ``body_or_message``: protobuf bytes (or OTLP/JSON bytes with ``content_type="json"``), or a
    parsed Export*ServiceRequest. Every row gets ``ingest_batch``. Never raises on bad data; an
    unknown ``signal`` name is a programming error and raises OtlpDecodeError.
    """
    signal = normalize_signal(signal)
    is_bytes = isinstance(body_or_message, (bytes, bytearray, memoryview))
    fast = _FAST.get(signal) if is_bytes and _content_type(content_type) == "protobuf" else None
    if fast is not None:
        decoder, names = fast
        try:
            got = decoder(bytes(body_or_message), ingest_batch)
        except Exception:  # noqa: BLE001 - the upb path below decodes (or quarantines) it instead
            logger.exception("fast %s decoder failed; falling back to upb", signal)
            got = None
        if got is not None:
            out = empty_tables()
            out.update(zip(names, got))
            return out
    try:
        req = _lite(signal, body_or_message, content_type)
    except OtlpDecodeError as e:
        return malformed_request(ingest_batch, body_or_message if is_bytes else None, str(e))
    out = empty_tables()
    try:
        if signal == "traces":
            out["spans"], out["quarantine"] = decode_spans(req, ingest_batch)
        elif signal == "logs":
            out["logs"], out["usage_events"], out["quarantine"] = decode_logs(req, ingest_batch)
        else:
            out["metric_points"], out["quarantine"] = decode_metrics(req, ingest_batch)
    except Exception as e:  # noqa: BLE001 - a decoder bug must not stop the pipeline: quarantine the request
        logger.exception("OTLP %s decoder failed; the request is quarantined whole", signal)
        body = body_or_message if is_bytes else req.SerializeToString()
        return malformed_request(ingest_batch, body, f"decoder error ({type(e).__name__}: {e}); please report this")
    return out


def record_count(signal: str, body_or_message) -> int:
    """How many spans / log records / data points a request holds (for accounting checks)."""
    req = _lite(normalize_signal(signal), body_or_message, "protobuf")
    if isinstance(req, LITE_CLASSES["traces"]):
        return sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
    if isinstance(req, LITE_CLASSES["logs"]):
        return sum(len(sl.log_records) for rl in req.resource_logs for sl in rl.scope_logs)
    return sum(len(getattr(m, m.WhichOneof("data")).data_points)
               for rm in req.resource_metrics for sm in rm.scope_metrics for m in sm.metrics if m.WhichOneof("data"))
