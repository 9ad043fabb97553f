"""Exceptions the receiver raises or maps onto OTLP responses.

Each names what went wrong and what the caller should do; the HTTP and gRPC front ends map
them onto status codes (see :mod:`tenantry.receiver.http` and :mod:`tenantry.receiver.grpc`).
"""

from __future__ import annotations


class ReceiverError(Exception):
    """Base class of every receiver error."""


class ReceiverConfigError(ReceiverError, ValueError):
    """The receiver was built with invalid settings (bad listen address, non-loopback host
    without ``allow_remote=True``, non-positive limits). Raised by the constructor."""


class BodyTooLarge(ReceiverError):
    """A request body is over the size limit, before or after decompression (HTTP 413,
    gRPC RESOURCE_EXHAUSTED). Not retryable: the client must send smaller batches."""


class UnsupportedMediaType(ReceiverError):
    """Content-Type or Content-Encoding the receiver does not speak (HTTP 415)."""


class LandingWriteError(ReceiverError):
    """The segment holding a request could not be made durable. The request was not
    acknowledged; clients get 503 / UNAVAILABLE and retry."""


class ReceiverOverloaded(ReceiverError):
    """Too many bytes are waiting for the landing writer; the client should back off and
    retry (HTTP 503 with Retry-After, gRPC UNAVAILABLE with RetryInfo)."""


class ReceiverClosed(ReceiverError):
    """The receiver is shutting down and no longer accepts requests; retry elsewhere or later."""
