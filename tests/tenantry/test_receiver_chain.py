"""The receiver with a processor chain (``tenantry collect --process``): real OTel SDK exporters and
httpx against a real receiver; what lands is normalized, processed, accounted for and durable."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pyarrow as pa
import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult

from collector_processors.base import Processor, Result
from collector_processors.registry import build_chain
from tenantry import landing, schemas
from tenantry.config import Config
from tenantry.receiver import Receiver, ReceiverConfigError
from tenantry.receiver.process import ChainLander

REPO = Path(__file__).resolve().parents[2]
PB = {"content-type": "application/x-protobuf"}
EMAIL = "jane.doe+leak@example.com"
HOSTILE_TENANTS = ["x'; DROP TABLE spans; --", "租户 🙂", "a" * 10_000, "__platform__", "<script>", ""]
PROCESSORS = [{"attribute_tenant": {"policy": "quarantine"}}, "validate", "redact", {"sample": {"default_percent": 0}}]


def chain():
    return build_chain(Config(processors=PROCESSORS))


def receiver(path: Path, flush_interval_s: float = 0.01) -> Receiver:
    return Receiver(path, http_listen="127.0.0.1:0", grpc_listen="127.0.0.1:0", chain=chain(),
                    flush_interval_s=flush_interval_s)


def landed(path: Path) -> dict[str, list]:
    """Every normalized segment's tables, concatenated as lists of rows per table."""
    out: dict[str, list] = {}
    for seg in landing.list_normalized_segments(path):
        for table, data, _meta in landing.iter_normalized_segment(seg):
            # timestamp[ns] cannot become Python objects without pandas; no test here needs them
            out.setdefault(table, []).extend(data.drop_columns(
                [f.name for f in data.schema if pa.types.is_timestamp(f.type)]).to_pylist())
    return out


def folder_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.iterdir() if p.is_file())


def sdk_spans(tenants: list[str], attrs: dict | None = None):
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    out = []
    for t in tenants:
        memory = InMemorySpanExporter()
        provider = TracerProvider(resource=Resource.create({"service.name": "checkout", "tenant.id": t}))
        provider.add_span_processor(SimpleSpanProcessor(memory))
        with provider.get_tracer("t").start_as_current_span("GET /cart", attributes=attrs or {}):
            pass
        provider.shutdown()
        out += memory.get_finished_spans()
    return out


def export_spans(r: Receiver, spans, transport: str) -> None:
    if transport.startswith("http"):
        exporter = HttpSpanExporter(endpoint=f"http://127.0.0.1:{r.http_port}/v1/traces", timeout=10,
                                    compression=Compression.Gzip if transport.endswith("gzip") else None)
    else:
        exporter = GrpcSpanExporter(endpoint=f"127.0.0.1:{r.grpc_port}", insecure=True, timeout=10)
    try:
        assert exporter.export(spans) == SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()


@pytest.mark.parametrize("transport", ["http", "http-gzip", "grpc"])
def test_sdk_spans_with_hostile_tenant_ids_land_as_quarantine_rows_with_their_reason(tmp_path, transport):
    with receiver(tmp_path) as r:
        export_spans(r, sdk_spans(HOSTILE_TENANTS[:-1] + ["acme"]), transport)
    got = landed(tmp_path)
    assert [s["tenant_id"] for s in got["spans"]] == ["acme"]
    reasons = sorted((q["table"], q["reason"], q["processor"]) for q in got["quarantine"])
    assert reasons == [("spans", "invalid_tenant_id", "attribute_tenant")] * (len(HOSTILE_TENANTS) - 1)
    assert landing.list_segments(tmp_path) == []  # nothing raw


def test_an_empty_tenant_id_is_quarantined_as_missing(tmp_path):
    with receiver(tmp_path) as r:
        export_spans(r, sdk_spans([""]), "http")
    assert [q["reason"] for q in landed(tmp_path)["quarantine"]] == ["missing_tenant"]


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_emails_are_redacted_before_anything_touches_disk(tmp_path, transport):
    with receiver(tmp_path) as r:
        export_spans(r, sdk_spans(["acme", "globex"], {"user.email": EMAIL, "note": f"mail {EMAIL} now"}), transport)
        provider = LoggerProvider(resource=Resource.create({"service.name": "billing"}))
        exporter = GrpcLogExporter(endpoint=f"127.0.0.1:{r.grpc_port}", insecure=True, timeout=10)
        provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
        provider.get_logger("t").emit(body=f"password reset for {EMAIL}", severity_number=SeverityNumber.INFO,
                                      attributes={"tenant.id": "acme"}, timestamp=time.time_ns())
        provider.shutdown()
    got = landed(tmp_path)
    assert len(got["spans"]) == 2 and len(got["logs"]) == 1
    assert dict(got["spans"][0]["attributes"])["user.email"] == "****"
    assert EMAIL.encode() not in folder_bytes(tmp_path) and b"example.com" not in folder_bytes(tmp_path)
    redacted = [s for s in got["processor_stats"] if s["outcome"] == "redacted:email"]
    assert sum(s["count"] for s in redacted) == 2 * 2 + 1


def test_an_email_in_a_quarantined_span_is_redacted_too(tmp_path):
    with receiver(tmp_path) as r:
        export_spans(r, sdk_spans(["x'; DROP TABLE spans; --"], {"user.email": EMAIL}), "http")
    assert landed(tmp_path)["quarantine"] and EMAIL.encode() not in folder_bytes(tmp_path)


def mixed_requests(n: int) -> list[tuple[str, bytes]]:
    """Spans, metric points and (via httpx) JSON spans, a third of them with hostile tenants."""
    now = time.time_ns()

    def kv(k, v):
        return common_pb2.KeyValue(key=k, value=common_pb2.AnyValue(string_value=v))

    out = []
    for i in range(n):
        tenant = HOSTILE_TENANTS[i % len(HOSTILE_TENANTS)] if i % 3 == 0 else f"tenant-{i % 4}"
        tr = trace_service_pb2.ExportTraceServiceRequest()
        ss = tr.resource_spans.add().scope_spans.add()
        for j in range(i % 7 + 1):
            ss.spans.append(trace_pb2.Span(trace_id=os.urandom(16), span_id=os.urandom(8), name=f"op-{j}",
                                           start_time_unix_nano=now, end_time_unix_nano=now + 1000,
                                           attributes=[kv("tenant.id", tenant)]))
        out.append(("traces", tr.SerializeToString()))
        mt = metrics_service_pb2.ExportMetricsServiceRequest()
        m = mt.resource_metrics.add().scope_metrics.add().metrics.add(name="queue.depth")
        for j in range(i % 5 + 1):
            m.gauge.data_points.append(metrics_pb2.NumberDataPoint(time_unix_nano=now, as_int=j,
                                                                   attributes=[kv("tenant.id", tenant)]))
        out.append(("metrics", mt.SerializeToString()))
    return out


def test_accounting_holds_per_table_records_in_equal_kept_plus_quarantined(tmp_path):
    requests = mixed_requests(30)

    async def send_all(port: int) -> list[int]:  # concurrently, so flushes mix signals and tenants
        async with httpx.AsyncClient() as client:
            answers = await asyncio.gather(*(client.post(f"http://127.0.0.1:{port}/v1/{signal}", content=body,
                                                         headers=PB) for signal, body in requests))
        return [a.status_code for a in answers]

    with receiver(tmp_path, flush_interval_s=0.05) as r:
        assert asyncio.run(send_all(r.http_port)) == [200] * len(requests)
    assert r.stats()["normalized_segments_written"] < len(requests)
    sent = {"spans": sum(i % 7 + 1 for i in range(30)), "metric_points": sum(i % 5 + 1 for i in range(30))}
    totals: dict[str, dict[str, int]] = {}
    for seg in landing.list_normalized_segments(tmp_path):
        tables, meta = landing.read_normalized_segment(seg)
        for table, fig in json.loads(meta[landing.META_ACCOUNTING]).items():
            assert fig["in"] == fig["kept"] + fig["quarantined"]
            assert fig["kept"] == (tables[table].num_rows if table in tables else 0)
            for k, v in fig.items():
                totals.setdefault(table, {}).setdefault(k, 0)
                totals[table][k] += v
    got = landed(tmp_path)
    for table, n in sent.items():
        assert totals[table]["in"] == n
        assert totals[table]["kept"] == len(got[table])
        assert totals[table]["quarantined"] == sum(q["table"] == table for q in got["quarantine"])
    assert totals["spans"]["quarantined"] == sum(i % 7 + 1 for i in range(0, 30, 3))
    stats = r.stats()
    assert stats["rows_in_spans"] == sent["spans"] and stats.get("raw_fallbacks", 0) == 0


def test_samplers_are_left_to_the_pipeline_and_the_segment_names_the_whole_chain(tmp_path):
    with receiver(tmp_path) as r:
        export_spans(r, sdk_spans(["acme"] * 20), "http")
    assert len(landed(tmp_path)["spans"]) == 20  # sample default_percent 0 did not run here
    (seg,) = landing.list_normalized_segments(tmp_path)
    _, meta = landing.read_normalized_segment(seg)
    assert meta[landing.META_PROCESSED_BY] == landing.chain_digest(chain())
    assert {s["ingest_batch"] for s in landed(tmp_path)["spans"]} == {f"nseg:{seg.name}"}
    assert not any(s["processor"] == "sample" for s in landed(tmp_path)["processor_stats"])


def test_json_requests_are_processed_like_protobuf(tmp_path):
    body = {"resourceSpans": [{"resource": {"attributes": [{"key": "tenant.id", "value": {"stringValue": "acme"}}]},
                               "scopeSpans": [{"spans": [{
                                   "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
                                   "name": "checkout", "startTimeUnixNano": str(time.time_ns()),
                                   "endTimeUnixNano": str(time.time_ns()),
                                   "attributes": [{"key": "email", "value": {"stringValue": EMAIL}}]}]}]}]}
    with receiver(tmp_path) as r:
        resp = httpx.post(f"http://127.0.0.1:{r.http_port}/v1/traces", json=body)
        assert resp.status_code == 200
    (span,) = landed(tmp_path)["spans"]
    assert span["trace_id"] == "5b8efff798038103d269b633813fc60c" and dict(span["attributes"])["email"] == "****"


def test_malformed_requests_are_still_refused_with_400_and_land_nothing(tmp_path):
    with receiver(tmp_path) as r:
        resp = httpx.post(f"http://127.0.0.1:{r.http_port}/v1/traces", content=b"\xff" * 64, headers=PB)
    assert resp.status_code == 400 and list(tmp_path.glob("*.arrow")) == []


def test_a_processing_bug_lands_the_flush_raw_and_still_acknowledges_it(tmp_path, monkeypatch, caplog):
    def boom(records, ingest_batch):
        raise RuntimeError("decoder bug")

    monkeypatch.setattr(ChainLander, "_decode", staticmethod(boom))
    spans = sdk_spans(["acme"] * 3, {"user.email": EMAIL})
    with receiver(tmp_path) as r:
        export_spans(r, spans, "http")
    assert r.stats()["raw_fallbacks"] == 1 and landing.list_normalized_segments(tmp_path) == []
    (seg,) = landing.list_segments(tmp_path)
    (signal, body), = landing.iter_requests(seg)
    req = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
    assert signal == "traces" and sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans) == 3
    assert "decoder bug" in caplog.text and "as raw segment" in caplog.text


def test_a_chain_that_loses_rows_makes_the_flush_land_raw_rather_than_drop_them(tmp_path):
    class Lossy(Processor):
        type_name = "lossy"

        def process(self, table, batch):
            return Result(batch.slice(0, batch.num_rows // 2), schemas.empty("quarantine"))

    with Receiver(tmp_path, http_listen="127.0.0.1:0", grpc_listen=None, chain=Lossy(), flush_interval_s=0.01) as r:
        export_spans(r, sdk_spans(["acme"] * 4), "http")
    assert r.stats()["raw_fallbacks"] == 1 and len(landing.list_segments(tmp_path)) == 1


def test_a_failed_write_is_a_retryable_error_and_leaves_nothing_visible(tmp_path, monkeypatch):
    def full_disk(fd):
        raise OSError(28, "No space left on device")

    with receiver(tmp_path) as r:
        monkeypatch.setattr(landing.os, "fsync", full_disk)
        resp = httpx.post(f"http://127.0.0.1:{r.http_port}/v1/traces", headers=PB,
                          content=mixed_requests(1)[0][1])
        monkeypatch.undo()
    assert resp.status_code == 503 and resp.headers["retry-after"] == "1"
    assert list(tmp_path.iterdir()) == []


def test_a_receiver_killed_mid_flush_acknowledged_nothing_and_left_no_visible_file(tmp_path):
    script = (
        "import os, sys\n"
        "from tenantry import landing\n"
        "from tenantry.config import Config\n"
        "from tenantry.receiver import Receiver\n"
        "from collector_processors.registry import build_chain\n"
        "landing.os.rename = lambda a, b: os._exit(9)  # die between fsync and rename\n"
        f"chain = build_chain(Config(processors={PROCESSORS!r}))\n"
        "r = Receiver(sys.argv[1], http_listen='127.0.0.1:0', grpc_listen=None, chain=chain)\n"
        "r.start(); print(r.http_port, flush=True); sys.stdin.read()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], cwd=REPO, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        port = int(proc.stdout.readline())
        with pytest.raises(httpx.TransportError):  # the connection dies: no 200 was ever sent
            httpx.post(f"http://127.0.0.1:{port}/v1/traces", headers=PB, content=mixed_requests(1)[0][1], timeout=20)
        assert proc.wait(timeout=20) == 9
    finally:
        proc.kill()
    assert landing.list_normalized_segments(tmp_path) == [] and landing.list_segments(tmp_path) == []
    assert all(p.name.startswith(".nseg-") and p.name.endswith(".tmp") for p in tmp_path.iterdir())


@pytest.mark.parametrize("bad", [object(), "redact", 42])
def test_something_that_is_not_a_processor_fails_at_construction(tmp_path, bad):
    with pytest.raises(ReceiverConfigError, match="expected a collector_processors Processor.*build_chain"):
        Receiver(tmp_path, http_listen="127.0.0.1:0", grpc_listen=None, chain=bad)


def test_without_a_chain_the_receiver_still_lands_raw_segments(tmp_path):
    with Receiver(tmp_path, http_listen="127.0.0.1:0", grpc_listen=None, flush_interval_s=0.01) as r:
        export_spans(r, sdk_spans(["acme"]), "http")
    assert len(landing.list_segments(tmp_path)) == 1 and landing.list_normalized_segments(tmp_path) == []


@pytest.mark.parametrize("codec", ["lz4", "zstd"])
def test_compressed_landing_is_read_by_the_pipeline_like_plain(tmp_path, codec, monkeypatch):
    """Both kinds of segment, compressed, land and read back; the batch pipeline needs no option."""
    from pipelines.batch import run_batch

    used = []
    for name in ("write_segment", "write_normalized_segment"):
        real = getattr(landing, name)
        monkeypatch.setattr(landing, name, lambda *a, _real=real, _name=name, **k: (
            used.append((_name, k.get("compression"))), _real(*a, **k))[1])
    spans = sdk_spans(["acme", "globex", "acme"], {"note": "x" * 200})
    with Receiver(tmp_path / "norm", http_listen="127.0.0.1:0", grpc_listen=None, chain=chain(),
                  flush_interval_s=0.01, compression=codec) as r:
        export_spans(r, spans, "http")
    with Receiver(tmp_path / "raw", http_listen="127.0.0.1:0", grpc_listen=None,
                  flush_interval_s=0.01, compression=codec) as r:
        export_spans(r, spans, "http")
    assert sorted(s["tenant_id"] for s in landed(tmp_path / "norm")["spans"]) == ["acme", "acme", "globex"]
    (raw,) = landing.list_segments(tmp_path / "raw")
    assert [sig for sig, _ in landing.iter_requests(raw)] == ["traces"]
    assert sorted(set(used)) == [("write_normalized_segment", codec), ("write_segment", codec)]
    for folder in ("norm", "raw"):
        report = run_batch([tmp_path / folder], tmp_path / f"wh-{folder}")
        assert report.rows["spans"] == 3 and report.balanced


@pytest.mark.parametrize("codec", ["gzip", "", "lz4; rm -rf /"])
def test_an_unknown_landing_codec_fails_at_construction(tmp_path, codec):
    for c in (None, chain()):
        with pytest.raises(ReceiverConfigError, match="segment compression .* is not one of none, lz4, zstd"):
            Receiver(tmp_path, http_listen="127.0.0.1:0", grpc_listen=None, chain=c, compression=codec)
    assert not any(tmp_path.iterdir())
