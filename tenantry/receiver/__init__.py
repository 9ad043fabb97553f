"""The OTLP receiver behind ``tenantry collect``: OTLP/HTTP and OTLP/gRPC in, durable landing
segments out.

What it promises:

- a request is acknowledged (HTTP 200 / gRPC OK) only once it is in a landing segment that has
  been fsynced and renamed into place (:mod:`tenantry.landing`); concurrent requests share
  segments (group commit every ``flush_interval_s`` or ``flush_bytes``);
- a failed write answers 503 / UNAVAILABLE (retryable), so nothing acknowledged is lost;
- raw segments (the default) hold protobuf ``Export*ServiceRequest`` bytes, whatever the request
  encoding; with ``chain=`` (``tenantry collect --process``) each flush is decoded, run through the
  processors (samplers excepted) and landed as one normalized segment instead
  (:mod:`tenantry.receiver.process`), falling back to a raw segment rather than losing a request;
- bodies are bounded before and after decompression (413 / RESOURCE_EXHAUSTED);
- it listens on loopback only unless ``allow_remote=True``.

Use :class:`Receiver` (``start``/``stop``, a context manager, or ``serve_forever``).
"""

from tenantry.receiver.errors import (
    BodyTooLarge,
    LandingWriteError,
    ReceiverClosed,
    ReceiverConfigError,
    ReceiverError,
    ReceiverOverloaded,
    UnsupportedMediaType,
)
from tenantry.receiver.process import ChainLander
from tenantry.receiver.server import Receiver
from tenantry.receiver.writer import GroupCommitWriter

__all__ = [
    "BodyTooLarge",
    "ChainLander",
    "GroupCommitWriter",
    "LandingWriteError",
    "Receiver",
    "ReceiverClosed",
    "ReceiverConfigError",
    "ReceiverError",
    "ReceiverOverloaded",
    "UnsupportedMediaType",
]
