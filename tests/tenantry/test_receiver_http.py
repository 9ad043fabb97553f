"""OTLP/HTTP against a real receiver on a free loopback port (httpx as the client)."""

from __future__ import annotations

import asyncio
import gzip
import json
import resource
import socket
import struct
import time
import zlib
from pathlib import Path

import httpx
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from tenantry import landing
from tenantry.receiver import Receiver

# the shared OTLP examples sit beside the checkout (CI copies shared/ next to its clone)
FIXTURES = next(
    (p for p in (Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "otlp",
                 Path("/work/shared/fixtures/otlp")) if p.is_dir()),
    Path("/work/shared/fixtures/otlp"),
)
PB = {"content-type": "application/x-protobuf"}
JS = {"content-type": "application/json"}


@pytest.fixture
def rx(tmp_path):
    with Receiver(tmp_path / "landing", http_listen="127.0.0.1:0", grpc_listen=None,
                  max_body_bytes=2**20, flush_interval_s=0.01) as r:
        yield r


def url(r: Receiver, path: str) -> str:
    return f"http://127.0.0.1:{r.http_port}{path}"


def landed(r: Receiver) -> list[tuple[str, bytes]]:
    return [rec for seg in landing.list_segments(r.landing) for rec in landing.iter_requests(seg)]


def trace_request(name: str = "span", attrs: dict[str, str] | None = None) -> trace_service_pb2.ExportTraceServiceRequest:
    span = trace_pb2.Span(trace_id=bytes(range(16)), span_id=bytes(range(8)), name=name,
                          start_time_unix_nano=1, end_time_unix_nano=2)
    for k, v in (attrs or {}).items():
        span.attributes.append(common_pb2.KeyValue(key=k, value=common_pb2.AnyValue(string_value=v)))
    req = trace_service_pb2.ExportTraceServiceRequest()
    req.resource_spans.add().scope_spans.add().spans.append(span)
    return req


def status_of(resp: httpx.Response) -> status_pb2.Status:
    st = status_pb2.Status()
    st.ParseFromString(resp.content)
    return st


def gzip_zeros(total: int, block: int = 8 * 2**20) -> bytes:
    """Valid gzip of ``total`` zero bytes, built fast by repeating one full-flushed block."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    zero = bytes(block)
    first = c.compress(zero) + c.flush(zlib.Z_FULL_FLUSH)
    steady = c.compress(zero) + c.flush(zlib.Z_FULL_FLUSH)
    n = total // block
    crc = 0
    for _ in range(n):
        crc = zlib.crc32(zero, crc)
    return first + steady * (n - 1) + b"\x03\x00" + struct.pack("<II", crc, (n * block) & 0xFFFFFFFF)


def test_protobuf_request_lands_byte_exact_and_answers_protobuf(rx):
    body = trace_request("checkout").SerializeToString()
    resp = httpx.post(url(rx, "/v1/traces"), content=body, headers=PB)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/x-protobuf"
    trace_service_pb2.ExportTraceServiceResponse.FromString(resp.content)  # parses
    assert landed(rx) == [("traces", body)]


@pytest.mark.parametrize("name,signal", [("trace.json", "traces"), ("logs.json", "logs"), ("metrics.json", "metrics")])
def test_shared_json_fixtures_posted_as_is_are_accepted_and_stored_as_protobuf(rx, name, signal):
    raw = (FIXTURES / name).read_bytes()
    resp = httpx.post(url(rx, f"/v1/{signal}"), content=raw, headers={"content-type": "application/json; charset=utf-8"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/json"
    assert resp.json() == {}
    [(got_signal, body)] = landed(rx)
    assert got_signal == signal
    assert len(body) > 0 and not body.startswith(b"{")  # protobuf, not the JSON text


def test_json_trace_ids_land_as_the_ids_the_client_sent(rx):
    httpx.post(url(rx, "/v1/traces"), content=(FIXTURES / "trace.json").read_bytes(), headers=JS)
    [(_, body)] = landed(rx)
    span = trace_service_pb2.ExportTraceServiceRequest.FromString(body).resource_spans[0].scope_spans[0].spans[0]
    assert span.trace_id.hex().upper() == "5B8EFFF798038103D269B633813FC60C"


def test_gzip_bodies_are_accepted(rx):
    body = trace_request("zipped").SerializeToString()
    resp = httpx.post(url(rx, "/v1/traces"), content=gzip.compress(body), headers={**PB, "content-encoding": "gzip"})
    assert resp.status_code == 200
    assert landed(rx) == [("traces", body)]


@pytest.mark.parametrize("headers", [PB, JS])
def test_an_empty_body_is_a_legal_empty_request(rx, headers):
    resp = httpx.post(url(rx, "/v1/logs"), content=b"", headers=headers)
    assert resp.status_code == 200
    assert landed(rx) == []  # nothing to land


def test_unicode_and_sql_looking_attribute_values_land_byte_exact(rx):
    hostile = {
        "sql": "'; DROP TABLE spans; --",
        "quote": 'a"b\\c',
        "unicode": "租户 🙂 Ωμέγα \u202e\u0000",
        "newline": "line1\r\nline2",
    }
    resp = httpx.post(url(rx, "/v1/traces"), content=json.dumps(
        {"resourceSpans": [{"scopeSpans": [{"spans": [{
            "traceId": "00" * 16, "spanId": "11" * 8, "name": "h",
            "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in hostile.items()]}]}]}]},
        ensure_ascii=False).encode("utf-8"), headers=JS)
    assert resp.status_code == 200
    [(_, body)] = landed(rx)
    span = trace_service_pb2.ExportTraceServiceRequest.FromString(body).resource_spans[0].scope_spans[0].spans[0]
    assert {kv.key: kv.value.string_value for kv in span.attributes} == hostile


@pytest.mark.parametrize("body,headers", [
    (b"\xff\xff\xff\xff", PB),
    (b'{"resourceSpans": 5}', JS),
    (b"{not json", JS),
])
def test_malformed_bodies_are_400_with_a_status_message_in_the_request_encoding(rx, body, headers):
    resp = httpx.post(url(rx, "/v1/traces"), content=body, headers=headers)
    assert resp.status_code == 400
    if headers is JS:
        assert resp.headers["content-type"] == "application/json"
        msg = resp.json()["message"]
    else:
        st = status_of(resp)
        msg = st.message
        bad = error_details_pb2.BadRequest()
        assert st.details[0].Unpack(bad) and bad.field_violations[0].description == msg
    assert "/v1/traces" in msg and ("protobuf" in msg or "JSON" in msg)
    assert landed(rx) == []


def test_a_log_body_posted_to_traces_is_not_silently_accepted_as_json(rx):
    logs = json.loads((FIXTURES / "logs.json").read_text())
    logs["resourceSpans"] = "wrong"
    assert httpx.post(url(rx, "/v1/traces"), json=logs).status_code == 400


@pytest.mark.parametrize("ctype", ["text/plain", "application/protobuf", ""])
def test_unknown_content_type_is_415(rx, ctype):
    resp = httpx.post(url(rx, "/v1/traces"), content=b"x", headers={"content-type": ctype})
    assert resp.status_code == 415
    assert "application/x-protobuf or application/json" in status_of(resp).message


def test_unknown_content_encoding_is_415_with_a_message(rx):
    resp = httpx.post(url(rx, "/v1/traces"), content=b"x", headers={**PB, "content-encoding": "br"})
    assert resp.status_code == 415
    assert "Content-Encoding 'br'" in status_of(resp).message


def test_oversized_body_is_413(rx):
    body = trace_request("big", {"blob": "x" * (2**20 + 10)}).SerializeToString()
    resp = httpx.post(url(rx, "/v1/traces"), content=body, headers=PB)
    assert resp.status_code == 413
    assert "limit" in status_of(resp).message
    assert landed(rx) == []


def test_oversized_content_length_is_refused_before_the_body_is_read(rx):
    # a raw socket: the client declares 1 GiB, sends 1 KiB and waits for the answer
    with socket.create_connection(("127.0.0.1", rx.http_port), timeout=5) as sock:
        sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                     b"Content-Length: 1073741824\r\n\r\n" + b"x" * 1024)
        head = sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 413 ")


def test_chunked_body_over_the_limit_is_413(rx):
    def chunks():
        for _ in range(40):
            yield b"\x00" * 65536

    resp = httpx.post(url(rx, "/v1/traces"), content=chunks(), headers=PB)
    assert resp.status_code == 413


def test_gzip_bomb_is_413_fast_with_flat_memory(rx):
    bomb = gzip_zeros(2**30)  # 1 GiB of zeros in about 1 MiB
    assert len(bomb) < rx.max_body_bytes
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.monotonic()
    resp = httpx.post(url(rx, "/v1/traces"), content=bomb, headers={**PB, "content-encoding": "gzip"}, timeout=30)
    elapsed = time.monotonic() - t0
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert resp.status_code == 413
    assert "after gzip decompression" in status_of(resp).message
    assert elapsed < 3
    assert grown_mib < 100


def test_unknown_path_is_404_and_wrong_method_is_405(rx):
    assert httpx.post(url(rx, "/v1/profiles"), content=b"", headers=PB).status_code == 404
    resp = httpx.get(url(rx, "/v1/traces"))
    assert resp.status_code == 405
    assert "POST" in status_of(resp).message


def test_healthz_is_ok(rx):
    assert httpx.get(url(rx, "/healthz")).status_code == 200


def test_concurrent_requests_are_grouped_and_every_acknowledged_one_is_present(tmp_path):
    n = 60
    bodies = [trace_request(f"s{i}").SerializeToString() for i in range(n)]

    async def go(port: int):
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=n)) as c:
            return await asyncio.gather(*[
                c.post(f"http://127.0.0.1:{port}/v1/traces", content=b, headers=PB) for b in bodies
            ])

    with Receiver(tmp_path, http_listen="127.0.0.1:0", grpc_listen=None, flush_interval_s=0.2) as r:
        responses = asyncio.run(go(r.http_port))
        assert [x.status_code for x in responses] == [200] * n
        segments = landing.list_segments(tmp_path)
        assert len(segments) < n / 4
        assert sorted(b for _, b in landed(r)) == sorted(bodies)
    assert r.stats()["segments_written"] == len(segments)


def test_a_failed_landing_write_is_503_retryable_and_nothing_acknowledged_is_lost(rx):
    ok_body = trace_request("before").SerializeToString()
    assert httpx.post(url(rx, "/v1/traces"), content=ok_body, headers=PB).status_code == 200

    def broken(landing_dir, records):
        raise PermissionError(13, "Permission denied", str(landing_dir))

    rx.writer._write_segment = broken
    lost = trace_request("during").SerializeToString()
    resp = httpx.post(url(rx, "/v1/traces"), content=lost, headers=PB)
    assert resp.status_code == 503
    assert resp.headers["retry-after"] == "1"
    st = status_of(resp)
    assert "Permission denied" in st.message and "retry" in st.message
    retry = error_details_pb2.RetryInfo()
    assert st.details[0].Unpack(retry) and retry.retry_delay.seconds == 1
    assert [b for _, b in landed(rx)] == [ok_body]

    rx.writer._write_segment = None  # the disk is back: the client's retry succeeds
    assert httpx.post(url(rx, "/v1/traces"), content=lost, headers=PB).status_code == 200
    assert sorted(b for _, b in landed(rx)) == sorted([ok_body, lost])
    assert rx.stats()["http_status_503"] == 1


def test_stop_flushes_requests_still_waiting_for_their_segment(tmp_path):
    r = Receiver(tmp_path, http_listen="127.0.0.1:0", grpc_listen=None, flush_interval_s=2.0).start()
    body = trace_request("late").SerializeToString()

    async def go():
        async with httpx.AsyncClient(timeout=30) as c:
            task = asyncio.create_task(c.post(url(r, "/v1/traces"), content=body, headers=PB))
            await asyncio.sleep(0.3)
            await asyncio.get_running_loop().run_in_executor(None, r.stop)
            return await task

    t0 = time.monotonic()
    resp = asyncio.run(go())
    assert resp.status_code == 200
    assert time.monotonic() - t0 < 1.8  # stop drains at once instead of waiting out the 2 s timer
    assert [b for _, b in landed(r)] == [body]
    assert r.stats()["http_accepted"] == 1


def test_logs_endpoint_lands_logs(rx):
    req = logs_service_pb2.ExportLogsServiceRequest()
    req.resource_logs.add().scope_logs.add().log_records.add().body.string_value = "hello"
    assert httpx.post(url(rx, "/v1/logs"), content=req.SerializeToString(), headers=PB).status_code == 200
    assert landed(rx) == [("logs", req.SerializeToString())]
