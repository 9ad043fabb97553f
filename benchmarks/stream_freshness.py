"""Receiver + stream pipeline: sustained spans/s and freshness (send → visible in DuckDB).

    python benchmarks/stream_freshness.py [--seconds 30] [--rate 20] [--spans-per-request 500]

Starts ``tenantry collect`` and ``tenantry run stream`` as separate processes on loopback, sends
OTLP/HTTP protobuf requests at a fixed rate (each carrying one probe span whose name holds its send
time), and polls ``tenant_sre_hourly``-backing data from a third process's read-only DuckDB
connections until every probe is visible. Prints the sustained rate and the freshness p50/p99,
next to the baseline of the receiver alone (requests acknowledged per second). Bounded in time.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue  # noqa: E402
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(n: int, probe: str, rng: random.Random) -> bytes:
    now = time.time_ns()
    kv = lambda k, v: KeyValue(key=k, value=AnyValue(string_value=v))  # noqa: E731
    spans = [Span(trace_id=rng.randbytes(16), span_id=rng.randbytes(8), name=probe if i == 0 else "GET /x",
                  kind=Span.SPAN_KIND_SERVER, start_time_unix_nano=now - 5_000_000, end_time_unix_nano=now,
                  attributes=[kv("tenant.id", f"t{rng.randrange(50):03d}")]) for i in range(n)]
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource={"attributes": [kv("service.name", "bench")]}, scope_spans=[ScopeSpans(spans=spans)])]
    ).SerializeToString()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--rate", type=float, default=20, help="requests per second")
    ap.add_argument("--spans-per-request", type=int, default=500)
    ap.add_argument("--unbounded", action="store_true",
                    help="measure the unbounded streaming pipeline (run stream --unbounded) instead of micro-batches")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tenantry-fresh-"))
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cli = [sys.executable, "-m", "tenantry.cli"]
    collect = subprocess.Popen(cli + ["collect", "--listen", f"127.0.0.1:{port}", "--grpc-listen", "off",
                                      "--landing", str(work / "landing")], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stream = subprocess.Popen(cli + ["run", "stream", "--landing", str(work / "landing"), "--warehouse",
                                     str(work / "wh"), "--poll-interval", "0.5" if args.unbounded else "0.2",
                                     *(["--unbounded"] if args.unbounded else [])], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    acked = 0
    try:
        deadline = time.time() + 30
        while time.time() < deadline:  # wait for the receiver
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
                break
            except OSError:
                time.sleep(0.2)
        stop = threading.Event()

        def watch():
            from tenantry import querying

            while not stop.is_set():
                try:
                    rows = querying.run(str(work / "wh"), "select name from spans where name like 'probe-%'").rows
                    t = time.time()
                    for (name,) in rows:
                        seen.setdefault(name, t)
                except Exception:
                    pass
                time.sleep(0.2)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        rng = random.Random(3)
        start = time.time()
        i = 0
        while time.time() - start < args.seconds:
            probe = f"probe-{i:06d}"
            body = request(args.spans_per_request, probe, rng)
            req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/traces", data=body, method="POST",
                                         headers={"Content-Type": "application/x-protobuf"})
            sent[probe] = time.time()
            with urllib.request.urlopen(req, timeout=30) as r:
                r.read()
            acked += 1
            i += 1
            time.sleep(max(0.0, start + i / args.rate - time.time()))
        send_seconds = time.time() - start
        wait_until = time.time() + 60
        while len(seen) < len(sent) and time.time() < wait_until:
            time.sleep(0.2)
        all_visible = max(seen.values()) if seen else time.time()
        stop.set()
    finally:
        for proc in (collect, stream):
            proc.send_signal(signal.SIGTERM)
        for proc in (collect, stream):
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
    lat = sorted(seen[p] - sent[p] for p in seen)
    total_spans = len(sent) * args.spans_per_request
    print(f"load average: {open('/proc/loadavg').read().split()[:3]}")
    print(f"sent {len(sent)} requests ({total_spans:,} spans) in {send_seconds:.1f}s; "
          f"visible {len(seen)}/{len(sent)} probes")
    print(f"receiver acknowledged (baseline): {acked / send_seconds:,.1f} req/s = "
          f"{acked * args.spans_per_request / send_seconds:,.0f} spans/s")
    print(f"receiver + stream sustained:      {total_spans / (all_visible - min(sent.values())):,.0f} spans/s "
          f"(until the last probe was visible)")
    if lat:
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
        print(f"freshness send → visible in DuckDB: p50 {statistics.median(lat):.2f}s, p99 {p99:.2f}s, "
              f"max {lat[-1]:.2f}s (target: 10 s)")


if __name__ == "__main__":
    main()
