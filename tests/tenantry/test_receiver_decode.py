"""Body decoding: media types, bounded gzip, OTLP/JSON hex ids, hostile input."""

from __future__ import annotations

import gzip
import json
import struct
import time
import zlib
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from tenantry.receiver import BodyTooLarge, UnsupportedMediaType
from tenantry.receiver.decode import OtlpDecodeError, _parse, check_encoding, gunzip_bounded, media_type

# the shared OTLP examples sit beside the checkout (CI copies shared/ next to its clone)
FIXTURES = next(
    (p for p in (Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "otlp",
                 Path("/work/shared/fixtures/otlp")) if p.is_dir()),
    Path("/work/shared/fixtures/otlp"),
)


def gzip_zeros(total: int, block: int = 8 * 2**20) -> bytes:
    """A valid single-member gzip of ``total`` zero bytes, built without compressing them all:
    after a full flush deflate output for identical input repeats, so one block is reused."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    zero = bytes(block)
    first = c.compress(zero) + c.flush(zlib.Z_FULL_FLUSH)
    steady = c.compress(zero) + c.flush(zlib.Z_FULL_FLUSH)
    n = total // block
    crc = 0
    for _ in range(n):
        crc = zlib.crc32(zero, crc)
    return first + steady * (n - 1) + b"\x03\x00" + struct.pack("<II", crc, (n * block) & 0xFFFFFFFF)


@pytest.mark.parametrize("header,expected", [
    ("application/x-protobuf", "protobuf"),
    ("application/json", "json"),
    ("Application/JSON; charset=utf-8", "json"),
    (" application/x-protobuf ; foo=bar", "protobuf"),
])
def test_content_type_parameters_and_case_are_ignored(header, expected):
    assert media_type(header) == expected


@pytest.mark.parametrize("header", [None, "", "text/plain", "application/protobuf", "application/jsonx", "*/*"])
def test_other_content_types_are_unsupported(header):
    with pytest.raises(UnsupportedMediaType, match="application/x-protobuf or application/json"):
        media_type(header)


def test_only_gzip_and_identity_encodings_are_accepted():
    assert check_encoding(None) is False and check_encoding("identity") is False
    assert check_encoding("GZIP") is True
    for bad in ("br", "deflate", "gzip, gzip", "zstd"):
        with pytest.raises(UnsupportedMediaType, match="Content-Encoding"):
            check_encoding(bad)


def test_gunzip_roundtrips_single_and_concatenated_members():
    assert gunzip_bounded(gzip.compress(b"hello"), 100) == b"hello"
    assert gunzip_bounded(gzip.compress(b"ab") + gzip.compress(b"cd"), 100) == b"abcd"


def test_gzip_bomb_stops_at_the_limit_fast():
    bomb = gzip_zeros(2**30)
    assert len(bomb) < 2 * 2**20
    t0 = time.monotonic()
    with pytest.raises(BodyTooLarge, match="after gzip decompression"):
        gunzip_bounded(bomb, 16 * 2**20)
    assert time.monotonic() - t0 < 2.0


def test_gzip_bomb_built_by_the_helper_is_real_gzip():
    small = gzip_zeros(3 * 2**20, block=2**20)
    assert gzip.decompress(small) == bytes(3 * 2**20)


@pytest.mark.parametrize("data", [b"not gzip at all", gzip.compress(b"x" * 1000)[:-12], gzip.compress(b"ok") + b"junk"])
def test_broken_gzip_is_a_decode_error(data):
    with pytest.raises(OtlpDecodeError, match="gzip"):
        gunzip_bounded(data, 10_000)


@pytest.mark.parametrize("name,signal", [("trace.json", "traces"), ("logs.json", "logs"), ("metrics.json", "metrics")])
def test_the_shared_json_fixtures_parse(name, signal):
    msg = _parse(signal, (FIXTURES / name).read_bytes(), "json")
    assert msg.ByteSize() > 0


def test_json_hex_trace_ids_become_the_raw_id_bytes():
    msg = _parse("traces", (FIXTURES / "trace.json").read_bytes(), "json")
    span = msg.resource_spans[0].scope_spans[0].spans[0]
    assert span.trace_id == bytes.fromhex("5B8EFFF798038103D269B633813FC60C")
    assert span.span_id == bytes.fromhex("EEE19B7EC3C1B174")
    assert span.parent_span_id == bytes.fromhex("EEE19B7EC3C1B173")


def test_unknown_json_fields_are_ignored_as_the_spec_requires():
    msg = _parse("traces", json.dumps({"resourceSpans": [], "futureField": {"x": 1}}).encode(), "json")
    assert msg == trace_service_pb2.ExportTraceServiceRequest()


def test_an_empty_body_is_the_empty_request_in_both_encodings():
    for enc in ("protobuf", "json"):
        assert _parse("logs", b"", enc).ByteSize() == 0


@pytest.mark.parametrize("body,match", [
    (b"{", "not valid JSON"),
    (b"[1, 2]", "JSON object"),
    (b"\xff\xfe", "not valid JSON"),
    (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}', "not a hex string"),
    (b'{"resourceSpans": "nope"}', "OTLP/JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "JSON"),
])
def test_malformed_json_is_a_decode_error_that_says_why(body, match):
    with pytest.raises(OtlpDecodeError, match=match):
        _parse("traces", body, "json")


def test_deeply_nested_json_attribute_values_are_rejected_not_a_crash():
    depth = 300
    value = '{"kvlistValue": {"values": [{"key": "k", "value": ' * depth + '{"stringValue": "leaf"}' + "}]}}" * depth
    body = '{"resourceSpans": [{"resource": {"attributes": [{"key": "deep", "value": %s}]}}]}' % value
    with pytest.raises(OtlpDecodeError):
        _parse("traces", body.encode(), "json")


@pytest.mark.parametrize("body", [b"\x0a\xff\xff\xff\xff\x0f", b"\xff" * 32, b"\x0a\x05abc"])
def test_malformed_protobuf_is_a_decode_error(body):
    with pytest.raises(OtlpDecodeError, match="not a valid protobuf ExportTraceServiceRequest"):
        _parse("traces", body, "protobuf")
