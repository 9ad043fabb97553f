"""Turning an OTLP/HTTP request body into a protobuf message, within bounded memory.

Promises:

- :func:`media_type` / :func:`check_encoding` accept exactly what OTLP/HTTP allows
  (``application/x-protobuf``, ``application/json``; ``gzip`` or ``identity``), ignoring
  parameters such as ``charset``, and raise :class:`UnsupportedMediaType` otherwise.
- :func:`gunzip_bounded` never holds more than ``limit + 1`` decompressed bytes, however well
  the input compresses: a gzip bomb costs a few MiB and a :class:`BodyTooLarge`.
- :func:`_parse` returns the ``Export*ServiceRequest`` for a signal or raises
  :class:`OtlpDecodeError` with a message that says what was wrong.
"""

from __future__ import annotations

import base64
import json
import zlib
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from tenantry.receiver.errors import BodyTooLarge, UnsupportedMediaType

try:  # the shared OTLP module owns the decode error type, so one except clause catches both
    from tenantry.otlp.messages import OtlpDecodeError
except ImportError:  # pragma: no cover - only while tenantry.otlp is being written

    class OtlpDecodeError(ValueError):  # type: ignore[no-redef]
        """The body is not a valid OTLP request of the expected signal and encoding."""


#: signal -> (request class, response class, name of the repeated top-level field)
MESSAGES: dict[str, tuple[type[Message], type[Message], str]] = {
    "traces": (
        trace_service_pb2.ExportTraceServiceRequest,
        trace_service_pb2.ExportTraceServiceResponse,
        "resource_spans",
    ),
    "logs": (
        logs_service_pb2.ExportLogsServiceRequest,
        logs_service_pb2.ExportLogsServiceResponse,
        "resource_logs",
    ),
    "metrics": (
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
        "resource_metrics",
    ),
}

PROTOBUF = "protobuf"
JSON = "json"
CONTENT_TYPES = {"application/x-protobuf": PROTOBUF, "application/json": JSON}
RESPONSE_CONTENT_TYPE = {PROTOBUF: "application/x-protobuf", JSON: "application/json"}

# OTLP/JSON encodes these bytes fields as hex, not the base64 of the proto3 JSON mapping.
_HEX_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})
_CHUNK = 256 * 1024


def media_type(content_type: str | None) -> str:
    """``protobuf`` or ``json`` for a Content-Type header; parameters (charset) are ignored."""
    mt = (content_type or "").split(";", 1)[0].strip().lower()
    try:
        return CONTENT_TYPES[mt]
    except KeyError:
        shown = repr(content_type) if content_type else "none"
        raise UnsupportedMediaType(
            f"unsupported Content-Type {shown}; send application/x-protobuf or application/json"
        ) from None


def check_encoding(content_encoding: str | None) -> bool:
    """True if the body is gzip-compressed, False if plain; :class:`UnsupportedMediaType` else."""
    enc = (content_encoding or "").strip().lower()
    if enc in ("", "identity"):
        return False
    if enc in ("gzip", "x-gzip"):
        return True
    raise UnsupportedMediaType(
        f"unsupported Content-Encoding {content_encoding!r}; send gzip or an uncompressed body"
    )


def gunzip_bounded(data: bytes, limit: int) -> bytes:
    """Decompress gzip ``data`` (one or more members), refusing to produce more than ``limit``
    bytes. Raises :class:`BodyTooLarge` past the limit, :class:`OtlpDecodeError` if the data is
    not complete, valid gzip."""
    out: list[bytes] = []
    produced = 0
    view = memoryview(data)
    while True:
        d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        pos = 0
        try:
            # Feed bounded input and cap each step's output, so a bomb never expands in memory
            # beyond the limit (plus one chunk).
            while not d.eof:
                tail = d.unconsumed_tail
                if tail:
                    chunk = d.decompress(tail, _CHUNK)
                elif pos < len(view):
                    chunk = d.decompress(view[pos : pos + _CHUNK], _CHUNK)
                    pos += _CHUNK
                else:
                    break
                produced += len(chunk)
                if produced > limit:
                    raise BodyTooLarge(
                        f"request body is larger than {limit} bytes after gzip decompression; "
                        "send smaller batches"
                    )
                out.append(chunk)
        except zlib.error as e:
            raise OtlpDecodeError(f"body is not valid gzip: {e}") from None
        if not d.eof:
            raise OtlpDecodeError("body is not valid gzip: the compressed stream is truncated")
        rest = d.unused_data + bytes(view[pos:])
        if not rest:
            return b"".join(out)
        view = memoryview(rest)  # another gzip member follows (concatenated streams are legal)


def _hex_ids_to_base64(node: Any) -> None:
    """Rewrite OTLP/JSON hex trace/span ids in place to the base64 that ParseDict expects."""
    stack = [node]
    while stack:
        cur = stack.pop()
        if isinstance(cur, dict):
            for key, value in cur.items():
                if key in _HEX_ID_KEYS and isinstance(value, str):
                    try:
                        raw = bytes.fromhex(value)
                    except ValueError:
                        raise OtlpDecodeError(f"{key} {value[:64]!r} is not a hex string") from None
                    cur[key] = base64.b64encode(raw).decode("ascii")
                elif isinstance(value, (dict, list)):
                    stack.append(value)
        elif isinstance(cur, list):
            stack.extend(v for v in cur if isinstance(v, (dict, list)))


def _parse(signal: str, body: bytes, content_type: str) -> Message:
    """Parse an OTLP request body of ``signal`` in ``content_type`` (``protobuf`` | ``json``).

    An empty body is the empty request (legal OTLP). Unknown JSON fields are ignored, as the
    OTLP spec requires. Raises :class:`OtlpDecodeError` saying what was wrong.
    """
    request_cls = MESSAGES[signal][0]
    msg = request_cls()
    if not body:
        return msg
    if content_type == PROTOBUF:
        try:
            msg.ParseFromString(body)
        except (DecodeError, RecursionError) as e:
            raise OtlpDecodeError(f"body is not a valid protobuf {request_cls.__name__}: {e}") from None
        return msg
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise OtlpDecodeError(f"body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise OtlpDecodeError(f"body must be a JSON object ({request_cls.__name__}), got {type(data).__name__}")
    _hex_ids_to_base64(data)
    try:
        json_format.ParseDict(data, msg, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as e:
        raise OtlpDecodeError(f"body is not a valid OTLP/JSON {request_cls.__name__}: {e}") from None
    return msg


def is_empty(signal: str, msg: Message) -> bool:
    """True if the request carries no resources at all (nothing worth landing)."""
    return len(getattr(msg, MESSAGES[signal][2])) == 0
