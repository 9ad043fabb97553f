"""The stream: same figures as batch, exactly once across kills, fresh within seconds."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from pipelines.batch import run_batch
from pipelines.stream import run_stream
from tenantry import landing, querying

TENANTS = ("acme", "globex", "initech")


def trace_request(tenant: str, n: int, start_ns: int, seed: int) -> bytes:
    rng = random.Random(seed)
    spans = []
    for i in range(n):
        s = start_ns + i * 1_000_000
        spans.append(Span(
            trace_id=rng.randbytes(16), span_id=rng.randbytes(8), name="GET /x", kind=Span.SPAN_KIND_SERVER,
            start_time_unix_nano=s, end_time_unix_nano=s + rng.randint(1, 50) * 1_000_000,
            attributes=[KeyValue(key="tenant.id", value=AnyValue(string_value=tenant))],
        ))
    req = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource={"attributes": [KeyValue(key="service.name", value=AnyValue(string_value="svc"))]},
        scope_spans=[ScopeSpans(spans=spans)],
    )])
    return req.SerializeToString()


def land(folder: Path, count: int, seed: int = 0) -> dict[str, int]:
    """Write ``count`` segments of known spans; returns spans per tenant."""
    expected: dict[str, int] = {}
    base = time.time_ns() - 3600 * 10**9
    for k in range(count):
        tenant = TENANTS[k % len(TENANTS)]
        n = 5 + (k * 7) % 11
        landing.write_segment(folder, [("traces", trace_request(tenant, n, base + k * 10**9, seed * 10_000 + k))])
        expected[tenant] = expected.get(tenant, 0) + n
    return expected


def figures(wh: Path) -> dict:
    q = lambda sql: sorted(querying.run(str(wh), sql).rows)  # noqa: E731
    return {
        "sre": q("select hour, tenant_id, service_name, requests, errors, round(p50_ms, 6), round(p99_ms, 6) "
                 "from tenant_sre_hourly"),
        "usage": q("select day, tenant_id, meter, quantity, event_count from tenant_usage_daily"),
        "coverage": q("select day, signal, total, unattributed from telemetry_coverage"),
        "spans": q("select tenant_id, count(*) from spans group by 1"),
    }


def test_stream_in_many_micro_batches_equals_one_batch_run(tmp_path):
    seg = tmp_path / "landing"
    land(seg, 9)
    run_batch([seg], tmp_path / "batch")
    stats = run_stream(seg, tmp_path / "stream", max_segments=2, poll_interval=0.05, idle_exit_after=0)
    assert stats.micro_batches == 5 and stats.segments == 9
    assert figures(tmp_path / "stream") == figures(tmp_path / "batch")


def test_segments_landing_while_the_stream_runs_are_each_processed_once(tmp_path):
    seg, wh = tmp_path / "landing", tmp_path / "wh"
    stop = threading.Event()
    t = threading.Thread(target=run_stream, args=(seg, wh), kwargs={"poll_interval": 0.1, "stop": stop})
    t.start()
    try:
        expected = {}
        for round_ in range(3):
            for k, v in land(seg, 2, seed=round_ + 1).items():
                expected[k] = expected.get(k, 0) + v
            time.sleep(0.3)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                got = dict(querying.run(str(wh), "select tenant_id, count(*) from spans group by 1").rows)
            except Exception:  # views not built yet
                got = {}
            if got == expected:
                break
            time.sleep(0.3)
        assert got == expected
    finally:
        stop.set()
        t.join(60)


@pytest.mark.slow
def test_killing_the_stream_at_random_moments_loses_and_duplicates_nothing(tmp_path):
    seg, wh = tmp_path / "landing", tmp_path / "wh"
    cmd = [sys.executable, "-m", "tenantry.cli", "run", "stream", "--landing", str(seg), "--warehouse", str(wh),
           "--poll-interval", "0.1", "--max-segments", "3"]
    rng = random.Random(42)
    expected: dict[str, int] = {}
    for round_ in range(4):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            # a producer keeps landing segments while the stream works
            for k, v in land(seg, 4, seed=100 + round_).items():
                expected[k] = expected.get(k, 0) + v
            time.sleep(rng.uniform(0.5, 4.0))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
    # a last, clean run drains everything
    done = subprocess.run(cmd + ["--exit-when-idle", "1"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    spans = dict(querying.run(str(wh), "select tenant_id, count(*) from spans group by 1").rows)
    requests = dict(querying.run(str(wh), "select tenant_id, sum(requests)::bigint from tenant_sre_hourly group by 1").rows)
    assert spans == expected
    assert requests == expected
    inputs = [i for r in __import__("tenantry.warehouse", fromlist=["Warehouse"]).Warehouse(wh).committed_runs()
              for i in r.get("inputs", [])]
    assert len(inputs) == len(set(inputs)) == len(landing.list_segments(seg))  # each segment committed once


def test_a_bad_config_stops_the_stream_before_it_starts(tmp_path):
    from tenantry import config

    cfg = config.parse({"processors": [{"no_such_processor": {}}]})
    with pytest.raises(Exception, match="no_such_processor"):
        run_stream(tmp_path / "l", tmp_path / "w", cfg, idle_exit_after=0)
