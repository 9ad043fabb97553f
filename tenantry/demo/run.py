"""``tenantry demo``: receive, process and show a sample app's telemetry, end to end.

Everything goes under one folder, so each step can be re-run by hand::

    DIR/tenantry.yaml      the configuration the demo ran with
    DIR/landing/           segments the receiver wrote
    DIR/warehouse/         the lake and tenantry.duckdb
    DIR/dashboards/        static HTML dashboards (index.html)
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
import time
from pathlib import Path

from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from tenantry import clirender, config as tconfig

console = clirender.console


class DemoError(RuntimeError):
    """A demo step failed; the message says which and how to re-run it by hand."""


def _config_source() -> Path:
    return Path(__file__).with_name("tenantry.yaml")


def run(directory: Path, n_requests: int = 600) -> dict:
    from pipelines.batch import run_batch
    from tenantry import dashboards
    from tenantry.demo import rogue
    from tenantry.receiver import Receiver

    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    cfg_path = directory / "tenantry.yaml"
    shutil.copyfile(_config_source(), cfg_path)
    cfg = tconfig.load(cfg_path)
    landing, warehouse, dash = directory / "landing", directory / "warehouse", directory / "dashboards"
    results: dict = {}
    started = time.monotonic()
    steps = ["receiver", "sample app", "rogue client", "flush", "batch pipeline", "cost", "billing", "dashboards"]
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        task = progress.add_task("starting the OTLP receiver", total=len(steps))
        receiver = Receiver(landing, http_listen="127.0.0.1:0", grpc_listen="127.0.0.1:0").start()
        try:
            endpoint = f"http://127.0.0.1:{receiver.http_port}"
            progress.update(task, advance=1, description=f"sample app: {n_requests} requests → {endpoint}")
            proc = subprocess.run(
                [sys.executable, "-m", "tenantry.demo.app", "--endpoint", endpoint, "--requests", str(n_requests)],
                capture_output=True, text=True, timeout=300,
            )
            if proc.returncode != 0:
                raise DemoError(f"the sample app failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
            results["sent"] = dict(kv.split("=", 1) for kv in proc.stdout.split())
            progress.update(task, advance=1, description="rogue client: hostile ids, PII, a cardinality burst")
            results["rogue_spans"] = rogue.send(endpoint)
            progress.update(task, advance=1, description="flushing the receiver")
        finally:
            results["receiver"] = receiver.stop()
        progress.update(task, advance=1, description="batch pipeline (Beam, in-process)")
        report = run_batch([landing], warehouse, cfg)
        results["report"] = report
        progress.update(task, advance=1, description="cloud cost: a FOCUS file for the demo day, allocated")
        from tenantry.cost import ingest as cost_ingest
        from tenantry.cost.demo import write_demo_cost

        day = dt.datetime.now(dt.timezone.utc).date()
        cost_file = write_demo_cost(directory / "cost" / "focus.csv", day)
        results["cost"] = cost_ingest(warehouse, [str(cost_file)], cfg)
        progress.update(task, advance=1, description="billing: rate, export to file, reconcile")
        from tenantry.billing import demo as billing_demo

        results["billing"] = billing_demo.run(warehouse, cfg)
        progress.update(task, advance=1, description="dashboards")
        pages = dashboards.build(warehouse, dash)
        progress.update(task, advance=1, description=f"done in {time.monotonic() - started:.1f}s")
    _summary(directory, warehouse, report, pages, cfg_path, results["billing"])
    return results


def _summary(directory: Path, warehouse: Path, report, pages, cfg_path: Path, billing: dict) -> None:
    from tenantry import querying

    res = querying.run(str(warehouse), "select * from tenant_summary order by requests desc")
    console.print(clirender.table(res.columns, res.rows, title="per-tenant summary"))
    cov = querying.run(str(warehouse), "select * from telemetry_coverage order by day, signal")
    console.print(clirender.table(cov.columns, cov.rows, title="tenant-context coverage"))
    q = querying.run(
        str(warehouse),
        "select table_name, reason, processor, count(*) as records from quarantine group by all order by records desc",
    )
    console.print(clirender.table(q.columns, q.rows, title="quarantined (kept with a reason, never dropped)"))
    acted = querying.run(
        str(warehouse),
        "select processor, outcome, tenant_id, sum(count) as rows from processor_stats "
        "where outcome not in ('kept') group by all order by rows desc limit 15",
    )
    console.print(clirender.table(acted.columns, acted.rows, title="what the processors did (redacted, overflowed, quarantined)"))
    from tenantry import alerts as alerts_lib

    found = alerts_lib.firing_alerts(str(warehouse), alerts_lib.parse_since("48h"))
    console.print(clirender.table(["time", "severity", "source", "tenant_id", "summary"],
                                  [(a.time, a.severity, a.source, a.tenant_id, a.summary) for a in found],
                                  title="alerts (SLO burn rate, noisy neighbours, security findings)"))
    led = report.ledger
    if led is not None:
        console.print(
            f"usage ledger: {led.events_in} usage events in, {led.accepted} accepted, "
            f"{led.duplicates} duplicates ignored, {sum(led.quarantined.values())} quarantined, "
            f"{led.entries_written} ledger entries; undeclared meters: {', '.join(led.undeclared_meters) or 'none'}"
        )
    bal = querying.run(
        str(warehouse),
        "select tenant_id, meter, sum(quantity) as quantity, any_value(unit) as unit, sum(event_count) as events "
        "from ledger_balance group by all order by tenant_id, meter",
    )
    console.print(clirender.table(bal.columns, bal.rows, title="usage ledger balance (what billing sees)"))
    console.print(clirender.table(
        ["tenant_id", "invoice draft"], sorted(billing["invoice_totals"].items()),
        title=f"invoice preview, period {billing['period']}",
    ))
    console.print("invoice files: " + ", ".join(billing["invoice_files"]))
    console.print(clirender.table(
        ["tenant_id", "leak", "meter", "provider"], billing["leaks"],
        title="revenue leakage found by reconciliation",
    ))
    console.print("amount at risk: " + (", ".join(f"{t} {a}" for t, a in billing["at_risk"].items()) or "none"))
    margin = querying.run(
        str(warehouse),
        "select tenant_id, revenue, cost, gross_margin, margin_pct from tenant_margin_monthly order by gross_margin",
    )
    console.print(clirender.table(margin.columns, margin.rows, title="cost and margin per tenant (this month)"))
    console.print(clirender.accounting_table(report.accounting))
    console.print(f"\n[bold]Open[/bold]\n  dashboards: {pages[0]}\n  warehouse:  {warehouse / 'tenantry.duckdb'}\n"
                  f"  config:     {cfg_path}\n")
    console.print("[bold]Re-run any step by hand[/bold]\n"
                  f"  tenantry run batch --input {directory / 'landing'} --warehouse {warehouse} --config {cfg_path}\n"
                  f"  tenantry query --warehouse {warehouse} \"select * from tenant_sre_hourly order by requests desc\"\n"
                  f"  tenantry dashboard build --warehouse {warehouse} --out {directory / 'dashboards'}")


def run_live(directory: Path, seconds: float = 60.0) -> dict:
    """``tenantry demo --live``: receiver + stream pipeline + the sample app sending in real time,
    with per-tenant figures refreshed every few seconds while it runs."""
    import os
    import threading

    from rich.live import Live

    from pipelines.stream import run_stream
    from tenantry import querying
    from tenantry.receiver import Receiver

    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    cfg_path = directory / "tenantry.yaml"
    shutil.copyfile(_config_source(), cfg_path)
    cfg = tconfig.load(cfg_path)
    landing, warehouse = directory / "landing", directory / "warehouse"
    receiver = Receiver(landing, http_listen="127.0.0.1:0", grpc_listen=None).start()
    stop = threading.Event()
    stats_box: dict = {}
    stream = threading.Thread(
        target=lambda: stats_box.update(stats=run_stream(landing, warehouse, cfg, poll_interval=0.5, stop=stop)),
        name="tenantry-stream", daemon=True,
    )
    stream.start()
    env = dict(os.environ, OTEL_BSP_SCHEDULE_DELAY="500", OTEL_BLRP_SCHEDULE_DELAY="500")
    app = subprocess.Popen(
        [sys.executable, "-m", "tenantry.demo.app", "--endpoint", f"http://127.0.0.1:{receiver.http_port}",
         "--live", str(seconds)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    sql = ("select tenant_id, sum(requests)::bigint as requests, sum(errors)::bigint as errors, "
           "max(p95_ms) as p95_ms from tenant_sre_hourly group by 1 order by requests desc")
    started = time.monotonic()
    try:
        with Live(console=console, refresh_per_second=2) as live:
            while app.poll() is None:
                time.sleep(2)
                try:
                    res = querying.run(str(warehouse), sql)
                    age = querying.run(str(warehouse), "select epoch(now()) - epoch(max(end_time)) from spans").rows[0][0]
                except Exception:  # nothing committed yet
                    continue
                title = (f"live for {time.monotonic() - started:.0f}s of {seconds:.0f}s; newest span visible "
                         f"{age:.1f}s after it ended" if age is not None else "waiting for data")
                live.update(clirender.table(res.columns, res.rows, title=title))
    finally:
        if app.poll() is None:
            app.terminate()
        receiver.stop()
        time.sleep(1.5)  # let the stream pick up the receiver's last segment
        stop.set()
        stream.join(120)
    if app.returncode not in (0, None, -15):
        raise DemoError(f"the sample app failed:\n{(app.stderr.read() if app.stderr else '')[-2000:]}")
    stats = stats_box.get("stats")
    console.print(f"stream: {stats.segments if stats else 0} segments in "
                  f"{stats.micro_batches if stats else 0} micro-batches; warehouse: {warehouse}")
    return {"stats": stats}
