"""Benchmark: OTLP protobuf trace requests -> the normalized ``spans`` table.

Generates realistic ExportTraceServiceRequest bodies with the real opentelemetry-proto classes
(default: 40 requests x 1000 spans, 10 attributes each, 20 tenants, 5 services), then times, in
the same run:

- ``upb parse only``     the protobuf parse alone (the ceiling for any Python decoder);
- ``naive copy``         the baseline: parse, then copy every field of every span into Python
                         lists (attributes via WhichOneof per value) and build an Arrow table;
- ``decode_request``     tenantry.otlp.decode_request, one process (the C span decoder when it is
                         built, see build_ext.py; ``... numpy`` rows: the same with it turned off);
- ``... upb path``       the same from an already parsed lite message (the per-column upb path);
- ``decode_files p=1``  tenantry.otlp.decode_files over .pb files in this process;
- ``decode_groups p=1``  tenantry.otlp.decode_groups (what the pipelines use): requests decoded together
                         in groups sized for the decoder (~2 MB with the C decoder, four files with
                         numpy), one vectorized pass each;
- ``... p=2 (pool)``     decode_files / decode_groups across 2 worker processes of a DecodePool
                         started once (includes reading the files and shipping Arrow IPC between
                         processes);
- ``... p=2 (per call)`` 2 workers started by each decode_files call (what a one-off call pays);
- log records (as many as spans): application logs and usage events through ``decode_request``,
  with the C log decoder and with it turned off (the upb path is the baseline).

Prints best and median spans/s of ``--repeat`` runs, the load average before each row, and
ratios (of best figures) against the naive baseline and the upb parse.

    python benchmarks/otlp_decode.py [--requests 40] [--spans 1000] [--attrs 10] [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from tenantry.otlp import DecodePool, decode_files, decode_groups, decode_request  # noqa: E402
from tenantry.otlp import spans as spans_mod  # noqa: E402
from tenantry.otlp.messages import LITE_CLASSES  # noqa: E402


@contextlib.contextmanager
def _numpy_decoder():
    """The numpy span decoder in this process while the block runs (the C one turned off)."""
    saved, spans_mod._fastspans = spans_mod._fastspans, None
    try:
        yield
    finally:
        spans_mod._fastspans = saved


def _kv(key, value) -> KeyValue:
    v = AnyValue()
    if isinstance(value, bool):
        v.bool_value = value
    elif isinstance(value, int):
        v.int_value = value
    else:
        v.string_value = value
    return KeyValue(key=key, value=v)


def make_request(seed: int, spans: int, attrs: int, tenants: int = 20, services: int = 5) -> bytes:
    """One SDK-shaped request: a resource per service, spans spread over them."""
    rnd = random.Random(seed)
    req = ExportTraceServiceRequest()
    routes = [f"/api/v1/{r}/{{id}}" for r in ("items", "orders", "users", "carts", "search")]
    per = spans // services
    for s in range(services):
        rs = req.resource_spans.add()
        rs.resource.attributes.extend([
            _kv("service.name", f"svc-{s}"), _kv("service.version", "1.4.2"),
            _kv("host.name", f"ip-10-0-{s}-{rnd.randrange(255)}"), _kv("telemetry.sdk.language", "python"),
        ])
        ss = rs.scope_spans.add()
        ss.scope.name = "opentelemetry.instrumentation.flask"
        trace = rnd.randbytes(16)
        for i in range(per if s < services - 1 else spans - per * (services - 1)):
            if i % 8 == 0:
                trace = rnd.randbytes(16)
            sp = ss.spans.add()
            sp.trace_id, sp.span_id = trace, rnd.randbytes(8)
            if i % 8:
                sp.parent_span_id = rnd.randbytes(8)
            route = rnd.choice(routes)
            sp.name = f"GET {route}"
            sp.kind = 2 if i % 8 == 0 else 3
            t0 = 1_700_000_000_000_000_000 + seed * 10**9 + i * 1_000_000
            sp.start_time_unix_nano, sp.end_time_unix_nano = t0, t0 + rnd.randrange(10**5, 10**9)
            sp.status.code = 2 if rnd.random() < 0.02 else 0
            pool = [
                _kv("tenant.id", f"tenant-{rnd.randrange(tenants):03d}"), _kv("user.id", f"user-{rnd.randrange(5000)}"),
                _kv("http.method", "GET"), _kv("http.route", route), _kv("http.status_code", 200),
                _kv("http.target", route.replace("{id}", str(rnd.randrange(10**6)))), _kv("net.peer.ip", "10.1.2.3"),
                _kv("tenant.tier", rnd.choice(["free", "pro", "enterprise"])), _kv("cache.hit", rnd.random() < 0.5),
                _kv("db.rows", rnd.randrange(100)), _kv("http.user_agent", "Mozilla/5.0 (X11; Linux x86_64)"),
                _kv("http.flavor", "1.1"),
            ]
            sp.attributes.extend(pool[:attrs])
    return req.SerializeToString()


def make_log_request(seed: int, records: int, usage: bool) -> bytes:
    """SDK-shaped log records: application logs, or usage events (``tenantry.record_usage``)."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    rnd = random.Random(seed)
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.extend([_kv("service.name", "checkout"), _kv("service.version", "1.4.2")])
    sl = rl.scope_logs.add()
    for i in range(records):
        r = sl.log_records.add()
        r.time_unix_nano = r.observed_time_unix_nano = 1_700_000_000_000_000_000 + seed * 10**9 + i * 1_000_000
        r.trace_id, r.span_id = rnd.randbytes(16), rnd.randbytes(8)
        tenant = _kv("tenant.id", f"tenant-{rnd.randrange(20):03d}")
        if usage:
            r.event_name = "tenantry.usage"
            r.attributes.extend([tenant, _kv("tenantry.usage.event_id", f"ev-{seed}-{i}"),
                                 _kv("tenantry.usage.meter", "api.calls"), _kv("tenantry.usage.quantity", "1"),
                                 _kv("tenantry.usage.unit", "1"), _kv("tenantry.usage.dim.region", "eu-west-1")])
        else:
            r.severity_number, r.severity_text = 9, "INFO"
            r.body.string_value = f"GET /api/v1/items/{rnd.randrange(10**6)} 200 in {rnd.randrange(1000)} ms"
            r.attributes.extend([tenant, _kv("http.route", "/api/v1/items/{id}"), _kv("user.id", f"user-{i}")])
    return req.SerializeToString()


def naive_copy(body: bytes) -> pa.Table:
    """The baseline: a plain field-by-field copy into per-column Python lists."""
    req = ExportTraceServiceRequest.FromString(body)
    cols = {k: [] for k in ("service", "trace_id", "span_id", "parent", "name", "kind", "start", "end", "status",
                            "attributes")}
    for rs in req.resource_spans:
        service = next((a.value.string_value for a in rs.resource.attributes if a.key == "service.name"), None)
        for ss in rs.scope_spans:
            for sp in ss.spans:
                cols["service"].append(service)
                cols["trace_id"].append(sp.trace_id.hex())
                cols["span_id"].append(sp.span_id.hex())
                cols["parent"].append(sp.parent_span_id.hex() or None)
                cols["name"].append(sp.name)
                cols["kind"].append(sp.kind)
                cols["start"].append(sp.start_time_unix_nano)
                cols["end"].append(sp.end_time_unix_nano)
                cols["status"].append(sp.status.code)
                attrs = []
                for a in sp.attributes:
                    which = a.value.WhichOneof("value")
                    v = getattr(a.value, which) if which else None
                    attrs.append((a.key, v if isinstance(v, str) else str(v)))
                cols["attributes"].append(attrs)
    cols["attributes"] = pa.array(cols["attributes"], pa.map_(pa.string(), pa.string()))
    return pa.table(cols)


def _rate(fn, spans: int, repeat: int) -> tuple[float, float, float]:
    """(best spans/s, median spans/s, load average before the runs) over ``repeat`` runs."""
    load = os.getloadavg()[0]
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return spans / min(times), spans / statistics.median(times), load


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--spans", type=int, default=1000, help="spans per request")
    ap.add_argument("--attrs", type=int, default=10, help="attributes per span (max 12)")
    ap.add_argument("--repeat", type=int, default=5, help="runs per row (best and median are shown)")
    args = ap.parse_args()
    bodies = [make_request(i, args.spans, args.attrs) for i in range(args.requests)]
    total = args.requests * args.spans
    mb = sum(map(len, bodies)) / 1e6
    print(f"{args.requests} requests x {args.spans} spans x {args.attrs} attributes = {total} spans, {mb:.1f} MB protobuf")

    results = {}
    results["upb parse only"] = _rate(lambda: [ExportTraceServiceRequest.FromString(b) for b in bodies], total, args.repeat)
    results["naive copy"] = _rate(lambda: [naive_copy(b) for b in bodies], total, args.repeat)
    results["decode_request"] = _rate(lambda: [decode_request("traces", b, "bench") for b in bodies], total, args.repeat)
    with _numpy_decoder():
        results["decode_request numpy"] = _rate(
            lambda: [decode_request("traces", b, "bench") for b in bodies], total, args.repeat)
    lite = LITE_CLASSES["traces"]
    results["... upb path"] = _rate(
        lambda: [decode_request("traces", lite.FromString(b), "bench") for b in bodies], total, args.repeat)
    check = decode_request("traces", bodies[0], "bench")
    assert check["spans"].num_rows == args.spans and check["quarantine"].num_rows == 0

    with tempfile.TemporaryDirectory() as d:
        paths = []
        for i, b in enumerate(bodies):
            p = Path(d) / f"traces-{i:04d}.pb"
            p.write_bytes(b)
            paths.append(p)

        def run(**kw):
            n = sum(t["spans"].num_rows for _, t in decode_files(paths, **kw))
            assert n == total, n

        def run_groups(**kw):
            n = sum(t["spans"].num_rows for _, t in decode_groups(paths, **kw))
            assert n == total, n

        results["decode_files p=1"] = _rate(run, total, args.repeat)
        results["decode_groups p=1"] = _rate(run_groups, total, args.repeat)
        with _numpy_decoder():
            results["decode_groups p=1 numpy"] = _rate(run_groups, total, args.repeat)
        with DecodePool(2) as pool:
            run(pool=pool)  # start the workers once, outside the timings
            results["decode_files p=2 (pool)"] = _rate(lambda: run(pool=pool), total, args.repeat)
            results["decode_groups p=2 (pool)"] = _rate(lambda: run_groups(pool=pool), total, args.repeat)
        list(decode_files(paths[:1], processes=2))  # start the fork server, outside the timings
        results["decode_files p=2 (per call)"] = _rate(lambda: run(processes=2), total, args.repeat)

    log_rows = {}
    for label, usage in (("application logs", False), ("usage events", True)):
        logs = [make_log_request(i, args.spans, usage) for i in range(args.requests)]
        log_rows[f"{label}: decode_request"] = _rate(
            lambda: [decode_request("logs", b, "bench") for b in logs], total, args.repeat)
        with _numpy_decoder():
            log_rows[f"{label}: upb path"] = _rate(
                lambda: [decode_request("logs", b, "bench") for b in logs], total, args.repeat)

    naive, upb = results["naive copy"][0], results["upb parse only"][0]
    print(f"\n{'path':28s} {'best spans/s':>13s} {'median':>10s} {'x naive':>8s} {'x upb':>7s} {'load':>5s}")
    for name, (best, median, load) in results.items():
        print(f"{name:28s} {best:13,.0f} {median:10,.0f} {best / naive:8.2f} {best / upb:7.2f} {load:5.1f}")
    p1 = results["decode_files p=1"][0]
    print(f"\np=2 (pool) / p=1: {results['decode_files p=2 (pool)'][0] / p1:.2f}x; "
          f"p=2 (per call) / p=1: {results['decode_files p=2 (per call)'][0] / p1:.2f}x")
    print(f"\n{'log records (same count)':38s} {'best rec/s':>11s} {'median':>10s} {'load':>5s}")
    for name, (best, median, load) in log_rows.items():
        print(f"{name:38s} {best:11,.0f} {median:10,.0f} {load:5.1f}")
    for label in ("application logs", "usage events"):
        print(f"{label}: C decoder / upb path {log_rows[label + ': decode_request'][0] / log_rows[label + ': upb path'][0]:.2f}x")
    print(f"C decoder / numpy decoder (decode_request): "
          f"{results['decode_request'][0] / results['decode_request numpy'][0]:.2f}x"
          + ("" if spans_mod.accelerated() else " (the C decoder is not built: python build_ext.py --inplace)"))
    print(f"(cpu count {os.cpu_count()}; ratios use best figures; load = 1-minute load average before each row; "
          f"{args.repeat} runs each; decoder pool workers use the C decoder too when it is built)")


if __name__ == "__main__":
    main()
