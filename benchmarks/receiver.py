"""Receiver throughput and latency: OTLP/HTTP (protobuf, JSON) and OTLP/gRPC, concurrent clients.

The receiver runs in its own process (so client and server do not share a GIL) with the
default 50 ms group commit. Each run is bounded by a request count and a time limit.

    .venv/bin/python benchmarks/receiver.py [--requests 2000] [--concurrency 32] [--spans 100] [--no-process]

Prints requests/s, spans/s, MB/s, p50/p99 acknowledgement latency and requests per segment.
The baseline is one segment per request (no group commit): requests/segment is the ratio.

Then the same scenarios against a receiver with the processor chain on (``tenantry collect
--process``: decode, attribute_tenant, validate, redact, limit_cardinality in the receiver, a
normalized segment per flush; ``sample`` is configured but left to the pipeline), each printed
with its ratio to the raw path above (the raw path is the baseline: it only lands bytes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

REPO = Path(__file__).resolve().parents[1]
SERVER = """
import json, sys
from tenantry.receiver import Receiver
chain = None
if sys.argv[2]:
    from collector_processors.registry import build_chain
    from tenantry.config import Config
    chain = build_chain(Config(processors=json.loads(sys.argv[2])))
r = Receiver(sys.argv[1], http_listen="127.0.0.1:0", grpc_listen="127.0.0.1:0", chain=chain).start()
print(r.http_port, r.grpc_port, flush=True)
sys.stdin.read()
print(json.dumps(r.stop()), flush=True)
"""

#: the chain of the processing scenario: every processor type, the demo's kind of settings
PROCESSORS = [
    {"attribute_tenant": {"policy": "quarantine"}},
    "validate",
    {"redact": {"blocked_keys": ["password"]}},
    {"limit_cardinality": {"max_values": 500}},
    {"sample": {"tiers": {"free": 10}}},
]


def make_request(n_spans: int, i: int) -> trace_service_pb2.ExportTraceServiceRequest:
    # recent timestamps: the processing scenario validates them (old ones would be quarantined)
    now = time.time_ns() - 60 * 10**9
    req = trace_service_pb2.ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(common_pb2.KeyValue(key="tenant.id", value=common_pb2.AnyValue(string_value="acme")))
    ss = rs.scope_spans.add()
    for j in range(n_spans):
        ss.spans.append(trace_pb2.Span(
            trace_id=i.to_bytes(8, "big") + j.to_bytes(8, "big"), span_id=j.to_bytes(8, "big"),
            name=f"GET /api/items/{j % 10}", start_time_unix_nano=now + j,
            end_time_unix_nano=now + 50_000_000 + j, kind=2,
            attributes=[common_pb2.KeyValue(key="http.route", value=common_pb2.AnyValue(string_value="/api/items"))],
        ))
    return req


async def run_http(port: int, bodies: list[bytes], ctype: str, concurrency: int, deadline: float) -> list[float]:
    """Keep-alive HTTP/1.1 POSTs over raw asyncio streams: httpx's own overhead caps it near
    100-200 req/s here, which would measure the client, not the receiver."""
    lat: list[float] = []
    queue = list(reversed(bodies))

    async def conn() -> None:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        try:
            while queue and time.monotonic() < deadline:
                body = queue.pop()
                t0 = time.monotonic()
                w.write(b"POST /v1/traces HTTP/1.1\r\nHost: bench\r\nContent-Type: %s\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (ctype.encode(), len(body), body))
                await w.drain()
                head = await r.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200 "), head
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                await r.readexactly(length)
                lat.append(time.monotonic() - t0)
        finally:
            w.close()

    await asyncio.gather(*(conn() for _ in range(concurrency)))
    return lat


async def run_grpc(port: int, bodies: list[bytes], concurrency: int, deadline: float) -> list[float]:
    sem = asyncio.Semaphore(concurrency)
    lat: list[float] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        export = ch.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")

        async def one(body: bytes) -> None:
            async with sem:
                if time.monotonic() > deadline:
                    return
                t0 = time.monotonic()
                await export(body, timeout=30)
                lat.append(time.monotonic() - t0)
        await asyncio.gather(*(one(b) for b in bodies))
    return lat


def report(name: str, lat: list[float], elapsed: float, spans: int, nbytes: int,
           baseline: float | None = None) -> float:
    """Print one scenario's line (with its ratio to ``baseline`` req/s when given); return req/s."""
    n = len(lat)
    q = statistics.quantiles(lat, n=100) if n > 1 else [lat[0]] * 99
    rate = n / elapsed
    ratio = f"  {rate / baseline:5.2f}x raw" if baseline else ""
    print(f"{name:22s} {n:6d} req  {rate:8.0f} req/s  {n * spans / elapsed:9.0f} spans/s  "
          f"{n * nbytes / elapsed / 2**20:6.1f} MiB/s  p50 {q[49] * 1000:5.0f} ms  p99 {q[98] * 1000:5.0f} ms{ratio}")
    return rate


def run_server(landing: str, processors: list | None, scenarios, args, baselines: dict | None) -> tuple[dict, dict]:
    """Start a receiver process, run every scenario against it; (req/s per scenario, final stats)."""
    proc = subprocess.Popen([sys.executable, "-c", SERVER, landing, json.dumps(processors) if processors else ""],
                            cwd=REPO, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    rates = {}
    try:
        http_port, grpc_port = map(int, proc.stdout.readline().split())
        for name, make, nbytes in scenarios:
            t0 = time.monotonic()
            lat = asyncio.run(make(http_port, grpc_port, t0 + args.max_seconds))
            label = f"{name} +chain" if processors else name
            rates[name] = report(label, lat, time.monotonic() - t0, args.spans, nbytes,
                                 baselines.get(name) if baselines else None)
        proc.stdin.close()
        stats = json.loads(proc.stdout.readline())
    finally:
        proc.kill()
    return rates, stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--spans", type=int, default=100)
    ap.add_argument("--max-seconds", type=float, default=30.0, help="per scenario")
    ap.add_argument("--no-process", action="store_true", help="skip the scenarios with the processor chain on")
    args = ap.parse_args()
    reqs = [make_request(args.spans, i) for i in range(args.requests)]
    pb = [r.SerializeToString() for r in reqs]
    js = []
    for r in reqs:  # OTLP/JSON: hex ids, as clients send them
        d = json_format.MessageToDict(r)
        for span in d["resourceSpans"][0]["scopeSpans"][0]["spans"]:
            span["traceId"] = bytes(r.resource_spans[0].scope_spans[0].spans[0].trace_id).hex()
            span["spanId"] = "00" * 8
        js.append(json.dumps(d).encode())
    scenarios = [
        ("http protobuf", lambda h, g, d: run_http(h, pb, "application/x-protobuf", args.concurrency, d), len(pb[0])),
        ("http json", lambda h, g, d: run_http(h, js, "application/json", args.concurrency, d), len(js[0])),
        ("grpc", lambda h, g, d: run_grpc(g, pb, args.concurrency, d), len(pb[0])),
    ]
    print(f"{args.requests} requests x {args.spans} spans ({len(pb[0])} B protobuf, {len(js[0])} B JSON), "
          f"concurrency {args.concurrency}, 2 cores shared by client and server")
    with tempfile.TemporaryDirectory() as landing:
        raw, stats = run_server(landing, None, scenarios, args, None)
    print(f"segments written {stats['segments_written']} for {stats['records_written']} requests: "
          f"{stats['records_written'] / max(1, stats['segments_written']):.1f} requests/segment "
          f"(baseline without group commit: 1.0)")
    if args.no_process:
        return
    with tempfile.TemporaryDirectory() as landing:
        _, stats = run_server(landing, PROCESSORS, scenarios, args, raw)
    print(f"with the chain: {stats.get('normalized_segments_written', 0)} normalized segments for "
          f"{stats['records_written']} requests ({stats['records_written'] / max(1, stats['segments_written']):.1f} "
          f"requests/segment), spans in {stats.get('rows_in_spans', 0)} = kept {stats.get('rows_kept_spans', 0)} "
          f"+ quarantined {stats.get('rows_quarantined_spans', 0)}, raw fallbacks {stats.get('raw_fallbacks', 0)}")


if __name__ == "__main__":
    main()
