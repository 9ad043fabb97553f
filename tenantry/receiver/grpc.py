"""OTLP/gRPC front end: ``TraceService``, ``LogsService`` and ``MetricsService`` ``Export`` on a
``grpc.aio`` server sharing the receiver's event loop.

Promises (OTLP/gRPC spec):

- ``OK`` with an ``Export*ServiceResponse`` only after the request is durable in a segment;
- a request over ``max_body_bytes`` (also after gzip decompression) fails with
  ``RESOURCE_EXHAUSTED`` from grpcio itself, without RetryInfo, so clients do not retry;
- a body that is not a valid ``Export*ServiceRequest`` fails with ``INVALID_ARGUMENT`` and a
  ``google.rpc.BadRequest`` detail (not retryable);
- a failed or overloaded landing write is ``UNAVAILABLE`` with a ``google.rpc.RetryInfo``
  detail (retryable); an empty request is ``OK`` and lands nothing.

The methods are registered on the services' full names from the generated descriptors but
receive the raw request bytes: the receiver validates them with the same parser as OTLP/HTTP
(so bad data is INVALID_ARGUMENT rather than grpcio's INTERNAL) and lands exactly the bytes the
client sent, without re-serializing.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from tenantry.receiver import decode
from tenantry.receiver.decode import PROTOBUF, OtlpDecodeError
from tenantry.receiver.errors import LandingWriteError, ReceiverClosed, ReceiverOverloaded
from tenantry.receiver.writer import GroupCommitWriter

#: seconds a client should wait before retrying UNAVAILABLE (sent as RetryInfo)
RETRY_DELAY_S = 1

#: signal -> fully qualified gRPC service name, from the generated descriptors
SERVICES = {
    "traces": trace_service_pb2.DESCRIPTOR.services_by_name["TraceService"].full_name,
    "logs": logs_service_pb2.DESCRIPTOR.services_by_name["LogsService"].full_name,
    "metrics": metrics_service_pb2.DESCRIPTOR.services_by_name["MetricsService"].full_name,
}


def _details(code: int, message: str, detail) -> tuple[tuple[str, bytes], ...]:
    """Trailing metadata carrying a rich ``google.rpc.Status`` (what grpcio-status sends)."""
    st = status_pb2.Status(code=code, message=message)
    st.details.add().Pack(detail)
    return (("grpc-status-details-bin", st.SerializeToString()),)


def _export_handler(signal: str, writer: GroupCommitWriter, stats: Counter) -> grpc.RpcMethodHandler:
    response_cls = decode.MESSAGES[signal][1]

    async def export(body: bytes, context: grpc.aio.ServicerContext):
        stats["grpc_bytes_received"] += len(body)
        try:
            request = decode._parse(signal, body, PROTOBUF)
        except OtlpDecodeError as e:
            stats["grpc_status_INVALID_ARGUMENT"] += 1
            violation = error_details_pb2.BadRequest.FieldViolation(field="request", description=str(e))
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e), trailing_metadata=_details(
                code_pb2.INVALID_ARGUMENT, str(e), error_details_pb2.BadRequest(field_violations=[violation])))
        if decode.is_empty(signal, request):
            stats["grpc_accepted_empty"] += 1
        else:
            try:
                await asyncio.wrap_future(writer.submit(signal, body))
            except (LandingWriteError, ReceiverOverloaded, ReceiverClosed) as e:
                stats["grpc_status_UNAVAILABLE"] += 1
                retry = error_details_pb2.RetryInfo(retry_delay={"seconds": RETRY_DELAY_S})
                await context.abort(grpc.StatusCode.UNAVAILABLE, str(e),
                                    trailing_metadata=_details(code_pb2.UNAVAILABLE, str(e), retry))
        stats["grpc_accepted"] += 1
        stats[f"grpc_accepted_{signal}"] += 1
        return response_cls()

    # no request deserializer: the handler gets the raw bytes (see the module docstring)
    return grpc.unary_unary_rpc_method_handler(export, response_serializer=response_cls.SerializeToString)


def build_server(writer: GroupCommitWriter, max_body_bytes: int, counters: Counter | None = None) -> grpc.aio.Server:
    """A ``grpc.aio`` server with the three OTLP services registered (no port bound yet).

    Must be called with the receiver's event loop running in the current thread.
    """
    stats = counters if counters is not None else Counter()
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_body_bytes),
            ("grpc.max_send_message_length", 4 * 2**20),
            # a port already in use must be a start-up error, not silently shared
            ("grpc.so_reuseport", 0),
        ]
    )
    server.add_generic_rpc_handlers([
        grpc.method_handlers_generic_handler(service, {"Export": _export_handler(signal, writer, stats)})
        for signal, service in SERVICES.items()
    ])
    return server
