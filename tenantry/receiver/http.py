"""OTLP/HTTP front end (a Starlette app): ``POST /v1/traces``, ``/v1/logs``, ``/v1/metrics``.

Follows the OTLP/HTTP specification:

- bodies in ``application/x-protobuf`` or ``application/json`` (other types: 415), optionally
  ``Content-Encoding: gzip`` (other encodings: 415);
- the size limit holds for the raw body (413, checked against Content-Length before reading)
  and again while decompressing (413; a gzip bomb never expands in memory);
- success is ``200`` with an ``Export*ServiceResponse`` in the request's encoding, sent only
  after the request is durable in a landing segment;
- bad data is ``400``; a failed or overloaded landing write is ``503`` with ``Retry-After``
  (retryable); every 4xx/5xx body is a ``google.rpc.Status`` in the request's encoding.

``GET /healthz`` answers 200 for readiness checks.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Callable

from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tenantry.receiver import decode
from tenantry.receiver.decode import JSON, PROTOBUF, OtlpDecodeError
from tenantry.receiver.errors import (
    BodyTooLarge,
    LandingWriteError,
    ReceiverClosed,
    ReceiverOverloaded,
    UnsupportedMediaType,
)
from tenantry.receiver.writer import GroupCommitWriter

#: seconds a client should wait before retrying a 503 (spec: Retry-After on throttling)
RETRY_AFTER_S = 1

_GRPC_CODE = {
    400: code_pb2.INVALID_ARGUMENT,
    404: code_pb2.NOT_FOUND,
    405: code_pb2.UNIMPLEMENTED,
    413: code_pb2.RESOURCE_EXHAUSTED,
    415: code_pb2.INVALID_ARGUMENT,
    503: code_pb2.UNAVAILABLE,
}


def _wanted_encoding(request: Request) -> str:
    """The encoding to answer in: the request's, protobuf when it is unknown."""
    try:
        return decode.media_type(request.headers.get("content-type"))
    except UnsupportedMediaType:
        return PROTOBUF


def _encode(msg: Message, encoding: str) -> bytes:
    if encoding == JSON:
        return json_format.MessageToJson(msg, indent=None).encode("utf-8")
    return msg.SerializeToString()


def status_response(code: int, message: str, encoding: str, headers: dict | None = None) -> Response:
    """A 4xx/5xx response whose body is a ``google.rpc.Status`` (as the OTLP spec requires)."""
    st = status_pb2.Status(code=_GRPC_CODE.get(code, code_pb2.UNKNOWN), message=message)
    if code == 400:
        st.details.add().Pack(error_details_pb2.BadRequest(
            field_violations=[error_details_pb2.BadRequest.FieldViolation(field="body", description=message)]
        ))
    elif code == 503:
        st.details.add().Pack(error_details_pb2.RetryInfo(retry_delay={"seconds": RETRY_AFTER_S}))
    return Response(_encode(st, encoding), status_code=code, headers=headers,
                    media_type=decode.RESPONSE_CONTENT_TYPE[encoding])


async def _read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing (413) before reading when Content-Length is over ``limit`` and
    while reading when the stream is."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise BodyTooLarge(f"Content-Length {declared} is over the {limit}-byte limit; send smaller batches")
        except ValueError:
            raise OtlpDecodeError(f"Content-Length {declared!r} is not a number") from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"request body is over the {limit}-byte limit; send smaller batches")
        chunks.append(chunk)
    return b"".join(chunks)


def _decode(signal: str, raw: bytes, gzipped: bool, encoding: str, limit: int) -> bytes | None:
    """Decompress and parse; return protobuf bytes to land, or None for an empty request."""
    body = decode.gunzip_bounded(raw, limit) if gzipped else raw
    msg = decode._parse(signal, body, encoding)
    if decode.is_empty(signal, msg):
        return None
    # protobuf bodies land as received (already validated); JSON is stored as protobuf
    return body if encoding == PROTOBUF else msg.SerializeToString()


def build_app(writer: GroupCommitWriter, max_body_bytes: int, counters: Counter | None = None) -> Starlette:
    """The OTLP/HTTP Starlette app landing through ``writer``; ``counters`` (shared with the
    caller) counts ``http_accepted``, ``http_status_<code>``, ``http_bytes_received``, ..."""
    stats = counters if counters is not None else Counter()

    def reject(code: int, message: str, encoding: str, headers: dict | None = None) -> Response:
        stats[f"http_status_{code}"] += 1
        return status_response(code, message, encoding, headers)

    def export(signal: str) -> Callable:
        async def handler(request: Request) -> Response:
            answer = _wanted_encoding(request)
            try:
                encoding = decode.media_type(request.headers.get("content-type"))
                gzipped = decode.check_encoding(request.headers.get("content-encoding"))
                raw = await _read_body(request, max_body_bytes)
                stats["http_bytes_received"] += len(raw)
                # decompression and parsing are CPU work; keep the event loop answering others
                to_land = await asyncio.get_running_loop().run_in_executor(
                    None, _decode, signal, raw, gzipped, encoding, max_body_bytes
                )
                if to_land is not None:
                    await asyncio.wrap_future(writer.submit(signal, to_land))
            except UnsupportedMediaType as e:
                return reject(415, str(e), answer)
            except BodyTooLarge as e:
                return reject(413, str(e), answer)
            except OtlpDecodeError as e:
                return reject(400, f"{request.url.path}: {e}", answer)
            except (LandingWriteError, ReceiverOverloaded, ReceiverClosed) as e:
                return reject(503, str(e), answer, {"Retry-After": str(RETRY_AFTER_S)})
            stats["http_accepted"] += 1
            stats[f"http_accepted_{signal}"] += 1
            if to_land is None:
                stats["http_accepted_empty"] += 1
            response = decode.MESSAGES[signal][1]()
            return Response(_encode(response, encoding), media_type=decode.RESPONSE_CONTENT_TYPE[encoding])

        return handler

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            msg = f"no OTLP endpoint at {request.url.path}; use /v1/traces, /v1/logs or /v1/metrics"
        elif exc.status_code == 405:
            msg = f"{request.method} is not allowed on {request.url.path}; OTLP/HTTP uses POST"
        else:
            msg = str(exc.detail)
        return reject(exc.status_code, msg, _wanted_encoding(request), exc.headers)

    routes = [Route(f"/v1/{s}", export(s), methods=["POST"]) for s in decode.MESSAGES]
    routes.append(Route("/healthz", healthz, methods=["GET"]))
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error})
