"""OTLP decoding: protobuf and OTLP/JSON requests, and files of them, into the normalized tables.

- :func:`parse_request` — strict parse (the receiver answers 400 on :class:`OtlpDecodeError`);
- :func:`decode_request` — one request -> all five tables, bad data quarantined, never raises;
- :func:`iter_file` / :func:`decode_files` — ``.json``, ``.jsonl``, ``.pb``, landing segments
  and their ``.gz`` forms -> ``(ingest_batch, tables)`` chunks, bounded in memory; a
  :class:`DecodePool` keeps worker processes across calls;
- :func:`decode_groups` — the same rows for many files, small ``.pb`` trace requests decoded
  together in groups (what the pipelines read with).
"""

from tenantry.otlp.decode import decode_request, empty_tables, parse_request
from tenantry.otlp.files import DEFAULT_MAX_DECOMPRESSED_BYTES, DecodePool, decode_files, decode_groups, iter_file
from tenantry.otlp.messages import SIGNALS, OtlpDecodeError

__all__ = [
    "DEFAULT_MAX_DECOMPRESSED_BYTES",
    "DecodePool",
    "OtlpDecodeError",
    "SIGNALS",
    "decode_files",
    "decode_groups",
    "decode_request",
    "empty_tables",
    "iter_file",
    "parse_request",
]
