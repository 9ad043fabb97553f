"""Batch pipeline throughput: spans/s end to end, next to two baselines measured in the same run.

    python benchmarks/batch_throughput.py [--spans 1000000 10000000] [--tenants 1000] [--pb-spans 1000000]

For each N it generates N synthetic spans over M tenants as Parquet, then measures, each in a
fresh subprocess (so peak RSS is the run's own):

- tenantry: ``run_batch`` (Beam in-process runner; processors, SRE/security/coverage partials,
  usage derivation, lake writes, ledger, commit) from the Parquet files;
- tenantry from landed Arrow: the same spans as ``tenantry collect --process`` lands them
  (normalized segments: Arrow IPC, one per row group, the processor chain already run by the
  receiver, so the run skips it; generated outside the timing), with its own I/O floor;
- near-limit baseline: DuckDB computing the same tenant_sre_hourly figures (count, errors,
  quantiles) directly from the same Parquet;
- per-element baseline: a straightforward Beam pipeline with one element per span (row dicts keyed
  by hour/tenant/service, combined per key), on the first 200k spans (its rate does not depend on N);
- I/O floor: only reading the input (decoding it, for ``.pb``) and writing the ``spans`` lake
  table with tenantry's Parquet settings, one thread per core: what any pipeline that stores the
  spans pays before it computes anything ("time / I/O floor" is how many times that tenantry takes).

It also times the OTLP protobuf path: ``.pb`` request bodies (1000 spans each) → views, with the
C span decoder (``build_ext.py``) and, as its baseline, with the numpy decoder.
Figures print as a table with ratios; nothing is asserted (machines here are shared and noisy).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FILE_SPANS = 1_000_000


def _child(code: str, *args: str, env: dict | None = None) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON line. Adds the child's peak RSS."""
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=str(ROOT), **(env or {})))
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    # the child's result is its last JSON line (libraries may print before it)
    lines = out.stdout.replace("\r", "\n").strip().splitlines()
    found = [json.loads(line) for line in reversed(lines) if line.startswith("{")]
    if not found:
        raise RuntimeError(f"no result from the child:\n{out.stdout[-1000:]}\n{out.stderr[-2000:]}")
    res = found[0]
    res.setdefault("peak_rss_mib", res.get("rss_mib"))
    return res


GEN = """
import sys, json, pyarrow.parquet as pq
from tenantry import synthetic
n, tenants, seed, path = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
pq.write_table(synthetic.spans(n, tenants=tenants, seed=seed), path, row_group_size=131072)
print(json.dumps({}))
"""

NSEG_GEN = """
# what `tenantry collect --process` lands: each flush decoded, run through the processor chain
# (samplers excepted) and written as one normalized segment (Arrow IPC), here one per row group
import sys, json, glob, pyarrow as pa, pyarrow.parquet as pq
from pathlib import Path
from tenantry import config, landing, schemas
from pipelines.batch import build_chain
from pipelines.transforms.process import split_chain
src, out = sys.argv[1], Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
chain = build_chain(config.Config())
receiver_chain, _samplers = split_chain(chain)
digest = landing.chain_digest(chain)
for path in sorted(glob.glob(src + '/*.parquet')):
    pf = pq.ParquetFile(path)
    for rg in range(pf.num_row_groups):
        name = landing.segment_name("nseg")
        data = pf.read_row_group(rg)
        data = data.drop_columns([c for c in ["ingest_batch"] if c in data.column_names])
        data = data.append_column("ingest_batch", pa.repeat(pa.scalar(f"nseg:{name}"), data.num_rows))
        res = receiver_chain.process("spans", schemas.conform("spans", data))
        tables = {"spans": schemas.conform("spans", res.kept)}
        if res.quarantined.num_rows:
            tables["quarantine"] = schemas.conform("quarantine", res.quarantined)
        accounting = {"spans": {"in": data.num_rows, "kept": res.kept.num_rows,
                                "quarantined": res.quarantined.num_rows}}
        landing.write_normalized_segment(out, tables, digest, name=name, accounting=accounting)
print(json.dumps({}))
"""

TENANTRY = """
import sys, json, time, glob, resource
from pipelines.batch import run_batch
t = time.perf_counter()
r = run_batch(sorted(glob.glob(sys.argv[1] + '/*.parquet')) or [sys.argv[1]], sys.argv[2])
print(json.dumps({"seconds": time.perf_counter() - t, "spans": r.rows.get("spans", 0),
                  "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

DUCKDB = """
import sys, json, time, duckdb
con = duckdb.connect()
con.execute("set enable_progress_bar = false")
t = time.perf_counter()
rows = con.execute(f'''
  select date_trunc('hour', start_time) as hour, tenant_id, service_name, count(*) as requests,
         count(*) filter (where status_code = 'error') as errors,
         quantile_cont(duration_ms, [0.5, 0.95, 0.99]) as q
  from read_parquet('{sys.argv[1]}/*.parquet') where kind in ('server', 'consumer') group by all''').fetchall()
print(json.dumps({"seconds": time.perf_counter() - t, "groups": len(rows)}))
"""

FLOOR = """
# the I/O floor: read the input and write the spans lake table with tenantry's Parquet writer
# settings, on one thread per core, and nothing else (no processors, partials, ledger or views)
import sys, json, time, glob, os, concurrent.futures as cf
import pyarrow.parquet as pq
from pathlib import Path
from tenantry import schemas
from tenantry.warehouse import Warehouse
from pipelines import runtime
runtime.tune_allocator()  # as tenantry's workers do, so the floor is not slowed by page faults
src, out = sys.argv[1], Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
files = sorted(glob.glob(src + '/*.parquet'))
def parquet_part(job):
    path, rg = job
    data = pq.ParquetFile(path).read_row_group(rg)
    Warehouse._write_parquet(out / f"{Path(path).stem}-{rg}.parquet", schemas.conform("spans", data), fsync=False)
    return data.num_rows
def pb_part(group):
    from tenantry import otlp
    n = 0
    for i, (_b, tables) in enumerate(otlp.decode_groups(group, pool=None)):
        Warehouse._write_parquet(out / f"{Path(group[0]).stem}-{i}.parquet", tables["spans"], fsync=False)
        n += tables["spans"].num_rows
    return n
def nseg_part(path):
    from tenantry import landing
    tables, _meta = landing.read_normalized_segment(path)
    Warehouse._write_parquet(out / f"{Path(path).stem}.parquet", tables["spans"], fsync=False)
    return tables["spans"].num_rows
t = time.perf_counter()
nsegs = sorted(glob.glob(src + '/nseg-*.arrow'))
if files:
    jobs, fn = [(f, i) for f in files for i in range(pq.ParquetFile(f).num_row_groups)], parquet_part
elif nsegs:
    jobs, fn = nsegs, nseg_part
else:
    pbs = sorted(glob.glob(src + '/*.pb'))
    jobs, fn = [pbs[i:i + 64] for i in range(0, len(pbs), 64)], pb_part
with cf.ThreadPoolExecutor(os.cpu_count()) as pool:
    spans = sum(pool.map(fn, jobs))
print(json.dumps({"seconds": time.perf_counter() - t, "spans": spans}))
"""

PER_ELEMENT = """
import sys, json, time, glob
import apache_beam as beam, numpy as np, pyarrow as pa, pyarrow.parquet as pq
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
limit = int(sys.argv[2])
files = sorted(glob.glob(sys.argv[1] + '/*.parquet'))
def rows(path):  # one element per span, as a plain dict
    n = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=65536, columns=[
            'tenant_id', 'service_name', 'kind', 'status_code', 'start_time', 'duration_ms']):
        batch = batch.set_column(4, 'start_time', batch.column(4).cast(pa.int64()))
        for r in batch.to_pylist():
            if n >= limit: return
            n += 1
            yield r
class Stats(beam.CombineFn):
    def create_accumulator(self): return [0, 0, []]
    def add_input(self, a, r):
        a[0] += 1; a[1] += r['status_code'] == 'error'; a[2].append(r['duration_ms']); return a
    def merge_accumulators(self, accs):
        out = [0, 0, []]
        for a in accs: out[0] += a[0]; out[1] += a[1]; out[2] += a[2]
        return out
    def extract_output(self, a): return (a[0], a[1], list(np.percentile(a[2], [50, 95, 99])))
t = time.perf_counter()
with beam.Pipeline(runner=FnApiRunner()) as p:
    (p | beam.Create(files[:1])
       | beam.FlatMap(rows)
       | beam.Filter(lambda r: r['kind'] in ('server', 'consumer'))
       | beam.Map(lambda r: ((r['start_time'] // 3_600_000_000_000, r['tenant_id'], r['service_name']), r))
       | beam.CombinePerKey(Stats()) | beam.Map(lambda kv: None))
print()
print(json.dumps({"seconds": time.perf_counter() - t, "spans": min(limit, pq.ParquetFile(files[0]).metadata.num_rows)}))
"""

PB_GEN = """
import sys, json, random, os
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status
import time
n, out = int(sys.argv[1]), sys.argv[2]
rng = random.Random(1)
kv = lambda k, v: KeyValue(key=k, value=AnyValue(string_value=v))
base = (time.time_ns() // 86_400_000_000_000 - 1) * 86_400_000_000_000
per_req = 1000
for r in range(n // per_req):
    spans = []
    for i in range(per_req):
        s = base + rng.randrange(86_400 * 10**9)
        attrs = [kv('tenant.id', f't{rng.randrange(1000):05d}'), kv('http.route', rng.choice(['/a', '/b', '/c'])),
                 kv('http.request.method', 'GET'), kv('user.id', f'u{rng.randrange(10000)}')]
        attrs += [kv(f'attr.{j}', f'value-{rng.randrange(100)}') for j in range(6)]
        spans.append(Span(trace_id=rng.randbytes(16), span_id=rng.randbytes(8), name='GET /x',
                          kind=Span.SPAN_KIND_SERVER, start_time_unix_nano=s,
                          end_time_unix_nano=s + rng.randrange(1, 100) * 10**6, attributes=attrs,
                          status=Status(code=2 if rng.random() < 0.02 else 0)))
    req = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource={'attributes': [kv('service.name', rng.choice(['api', 'search']))]},
        scope_spans=[ScopeSpans(spans=spans)])])
    with open(os.path.join(out, f'traces-{r:05d}.pb'), 'wb') as f:
        f.write(req.SerializeToString())
print(json.dumps({}))
"""


def _accelerated() -> bool:
    return bool(_child("import json; from tenantry.otlp.spans import accelerated; "
                       "print(json.dumps({'c': accelerated()}))")["c"])


def measure(n: int, tenants: int, work: Path) -> dict:
    data = work / f"spans-{n}"
    data.mkdir()
    for i in range(0, n, FILE_SPANS):
        _child(GEN, str(min(FILE_SPANS, n - i)), str(tenants), str(i // FILE_SPANS), str(data / f"spans-{i:09d}.parquet"))
    res = {"n": n}
    res["tenantry"] = _child(TENANTRY, str(data), str(work / f"wh-{n}"))
    res["duckdb"] = _child(DUCKDB, str(data))
    res["per_element"] = _child(PER_ELEMENT, str(data), str(min(n, 200_000)))
    res["floor"] = _child(FLOOR, str(data), str(work / f"floor-{n}"))
    shutil.rmtree(work / f"floor-{n}")
    shutil.rmtree(work / f"wh-{n}")
    # the same spans as the receiver lands them with `collect --process` (processors already run)
    segs = work / f"nseg-{n}"
    _child(NSEG_GEN, str(data), str(segs))
    shutil.rmtree(data)
    res["landed"] = _child(TENANTRY, str(segs), str(work / f"wh-nseg-{n}"))
    res["landed_floor"] = _child(FLOOR, str(segs), str(work / f"floor-nseg-{n}"))
    for d in (segs, work / f"wh-nseg-{n}", work / f"floor-nseg-{n}"):
        shutil.rmtree(d)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spans", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--tenants", type=int, default=1000)
    ap.add_argument("--pb-spans", type=int, default=1_000_000)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tenantry-bench-"))
    print(f"load average at start: {open('/proc/loadavg').read().split()[:3]}")
    try:
        rows = []
        for n in args.spans:
            r = measure(n, args.tenants, work)
            t, d, e, f = r["tenantry"], r["duckdb"], r["per_element"], r["floor"]
            rate = n / t["seconds"]
            rows.append((f"{n:,} spans (Parquet)", f"{rate:,.0f}", f"{n / d['seconds']:,.0f}",
                         f"{e['spans'] / e['seconds']:,.0f}", f"{n / f['seconds']:,.0f}",
                         f"{rate / (n / d['seconds']):.2f}x", f"{rate / (e['spans'] / e['seconds']):.1f}x",
                         f"{t['seconds'] / f['seconds']:.2f}x", f"{t['peak_rss_mib']:,.0f}" if t["peak_rss_mib"] else "?"))
            a, af = r["landed"], r["landed_floor"]
            arate = n / a["seconds"]
            rows.append((f"{n:,} spans (landed Arrow segments)", f"{arate:,.0f}", "",
                         f"{e['spans'] / e['seconds']:,.0f}", f"{n / af['seconds']:,.0f}", "",
                         f"{arate / (e['spans'] / e['seconds']):.1f}x", f"{a['seconds'] / af['seconds']:.2f}x",
                         f"{a['peak_rss_mib']:,.0f}" if a["peak_rss_mib"] else "?"))
        pb = work / "pb"
        pb.mkdir()
        _child(PB_GEN, str(args.pb_spans), str(pb))
        t = _child(TENANTRY, str(pb), str(work / "wh-pb"))
        # baseline: the same run with the numpy span decoder (the C one turned off)
        b = _child(TENANTRY, str(pb), str(work / "wh-pb-numpy"), env={"TENANTRY_PURE_DECODER": "1"})
        f = _child(FLOOR, str(pb), str(work / "floor-pb"))
        label = "C decoder" if _accelerated() else "C decoder NOT BUILT: numpy"
        rows.append((f"{args.pb_spans:,} spans (.pb OTLP, {label})", f"{args.pb_spans / t['seconds']:,.0f}", "", "",
                     f"{args.pb_spans / f['seconds']:,.0f}", "", "", f"{t['seconds'] / f['seconds']:.2f}x",
                     f"{t['peak_rss_mib']:,.0f}" if t["peak_rss_mib"] else "?"))
        rows.append((f"{args.pb_spans:,} spans (.pb OTLP, numpy decoder)", f"{args.pb_spans / b['seconds']:,.0f}", "",
                     "", "", "", "", "", f"{b['peak_rss_mib']:,.0f}" if b["peak_rss_mib"] else "?"))
        pb_ratio = b["seconds"] / t["seconds"]
        head = ("input", "tenantry spans/s", "DuckDB SQL spans/s", "per-element Beam spans/s",
                "I/O floor spans/s", "tenantry / DuckDB", "tenantry / per-element", "time / I/O floor",
                "tenantry peak RSS MiB")
        widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
        for line in (head, *rows):
            print("  ".join(str(x).rjust(w) for x, w in zip(line, widths)))
        print(f".pb with the C span decoder / with the numpy decoder: {pb_ratio:.2f}x")
        print(f"load average at end: {open('/proc/loadavg').read().split()[:3]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
