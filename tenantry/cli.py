"""The ``tenantry`` command line: a thin layer over the library (every command calls one function).

Run ``tenantry --help`` or ``tenantry COMMAND --help``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from tenantry import clirender

log = logging.getLogger("tenantry")


def _quiet_third_party_logs() -> None:
    # Beam warns at import time about optional GCP libraries that tenantry never uses.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(logging.ERROR)
    logging.getLogger("tenantry").setLevel(logging.INFO)


def _load_config(path: str | None):
    from tenantry import config

    try:
        return config.load(path)
    except config.ConfigError as e:
        raise click.ClickException(str(e)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tenantry")
def main() -> None:
    """tenantry: per-tenant usage, SRE, security and cost from OpenTelemetry data.

    \b
    Typical flow:
      tenantry collect --landing ./landing            # receive OTLP from apps
      tenantry run batch --input ./landing --warehouse ./wh
      tenantry query --warehouse ./wh "select * from tenant_sre_hourly"
    """
    _quiet_third_party_logs()


# -- collect ------------------------------------------------------------------------------------


def _hostport(value: str, option: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not (0 <= int(port) <= 65535):
        raise click.BadParameter(f"expected HOST:PORT (e.g. 127.0.0.1:4318), got {value!r}", param_hint=option)
    return host or "127.0.0.1", int(port)


@main.command()
@click.option("--listen", default="127.0.0.1:4318", show_default=True, help="OTLP/HTTP address (HOST:PORT).")
@click.option("--grpc-listen", default="127.0.0.1:4317", show_default=True,
              help="OTLP/gRPC address (HOST:PORT); 'off' to disable.")
@click.option("--landing", required=True, type=click.Path(file_okay=False), help="Landing folder for segments.")
@click.option("--max-body-bytes", default=16 * 2**20, show_default=True, type=click.IntRange(1024),
              help="Largest request accepted, also after decompression.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="tenantry.yaml")
@click.option("--allow-remote", is_flag=True, help="Allow listening on a non-loopback address.")
@click.option("--process", is_flag=True,
              help="Run the configured processors (all but sample) before landing: normalized segments, "
                   "personal data redacted before it touches disk. Default: raw segments (fastest).")
@click.option("--compression", type=click.Choice(["none", "lz4", "zstd"]), default="none", show_default=True,
              help="Compress landed segments: lz4 ~2.8x smaller (normalized spans), zstd ~4.2x, for more CPU "
                   "in the receiver and the pipeline; readers need no option.")
def collect(listen, grpc_listen, landing, max_body_bytes, config_path, allow_remote, process, compression):
    """Run the OTLP receiver (HTTP and gRPC) and land what it accepts durably."""
    from tenantry.receiver import Receiver

    cfg = _load_config(config_path)  # fail at start-up on a bad config
    chain = None
    if process:
        from collector_processors.base import ProcessorConfigError
        from collector_processors.registry import build_chain

        try:
            chain = build_chain(cfg)
        except ProcessorConfigError as e:
            raise click.ClickException(f"{config_path or 'processors'}: {e}") from None
    _hostport(listen, "--listen")
    grpc = None if grpc_listen == "off" else grpc_listen
    if grpc:
        _hostport(grpc, "--grpc-listen")
    rec = Receiver(Path(landing), http_listen=listen, grpc_listen=grpc, max_body_bytes=max_body_bytes,
                   allow_remote=allow_remote, chain=chain, compression=compression)
    click.echo(f"tenantry collect: landing in {landing}; OTLP/HTTP on {listen}"
               + (f", OTLP/gRPC on {grpc}" if grpc else "") + " (Ctrl-C to stop)")
    if rec.lander is not None:
        click.echo(f"processing with {', '.join(p.name for p in rec.lander.chain) or 'no processors'}"
                   + (f"; left to the pipeline: {', '.join(rec.lander.deferred)}" if rec.lander.deferred else ""))
    rec.serve_forever()


# -- run ----------------------------------------------------------------------------------------


@main.group()
def run() -> None:
    """Run a pipeline (batch now; stream keeps running)."""


@run.command("batch", context_settings={"ignore_unknown_options": True})
@click.option("--input", "inputs", multiple=True, required=True, type=click.Path(),
              help="Landing folder or OTLP/Parquet file; repeat for more.")
@click.option("--warehouse", required=True, type=click.Path(file_okay=False), help="Warehouse folder.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="tenantry.yaml")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.argument("beam_args", nargs=-1, type=click.UNPROCESSED)
def run_batch_cmd(inputs, warehouse, config_path, fmt, beam_args):
    """Process inputs into the warehouse on Beam (in-process by default).

    Extra arguments go to Beam, e.g. `-- --runner=PortableRunner --job_endpoint=localhost:8099`.
    Re-running over the same inputs adds nothing.
    """
    from pipelines.batch import run_batch
    from pipelines.io import InputError
    from tenantry.warehouse import WarehouseError

    cfg = _load_config(config_path)
    try:
        with clirender.progress(f"batch run over {len(inputs)} input path(s)"):
            report = run_batch(list(inputs), warehouse, cfg, list(beam_args))
    except (InputError, WarehouseError) as e:
        raise click.ClickException(str(e)) from None
    clirender.print_run_report(report, warehouse, fmt)


@run.command("stream", context_settings={"ignore_unknown_options": True})
@click.option("--landing", required=True, type=click.Path(file_okay=False), help="Landing folder to watch.")
@click.option("--warehouse", required=True, type=click.Path(file_okay=False), help="Warehouse folder.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="tenantry.yaml")
@click.option("--poll-interval", default=1.0, show_default=True, type=click.FloatRange(0.05, 3600),
              help="Seconds between looks at the landing folder.")
@click.option("--max-segments", default=500, show_default=True, type=click.IntRange(1),
              help="Most segments per micro-batch (a backlog drains in several).")
@click.option("--exit-when-idle", type=click.FloatRange(0), default=None,
              help="Stop once no segment has arrived for this many seconds.")
@click.option("--unbounded", is_flag=True,
              help="Run one streaming Beam pipeline (continuous file matching, a commit per poll tick) instead "
                   "of micro-batches; the form for cluster runners (--runner=DataflowRunner|FlinkRunner ...).")
@click.option("--watch", "pattern", default=None,
              help="With --unbounded: file pattern to watch instead of LANDING/*seg-*.arrow "
                   "(any Beam filesystem, e.g. s3://bucket/landing/*seg-*.arrow on a cluster runner).")
@click.option("--stop-after", type=click.FloatRange(0), default=None,
              help="With --unbounded: stop watching after this many seconds (default: run until Ctrl-C).")
@click.argument("beam_args", nargs=-1, type=click.UNPROCESSED)
def run_stream_cmd(landing, warehouse, config_path, poll_interval, max_segments, exit_when_idle, unbounded,
                   pattern, stop_after, beam_args):
    """Process segments as they land, continuously; Ctrl-C or SIGTERM stops after the current step.

    Restarting (even after a SIGKILL) continues exactly where the warehouse's manifests say:
    no segment is missed or counted twice. Extra arguments are Beam pipeline options.
    """
    from pipelines.stream import run_stream
    from tenantry.warehouse import WarehouseError

    cfg = _load_config(config_path)
    if unbounded:
        from pipelines.unbounded import run_unbounded

        if exit_when_idle is not None:
            raise click.UsageError("--exit-when-idle is for micro-batches; with --unbounded use --stop-after")

        clirender.err_console.print(f"tenantry run stream --unbounded: watching {pattern or landing} → {warehouse}")
        try:
            ust = run_unbounded(landing, warehouse, cfg, interval=poll_interval, stop_after=stop_after,
                                beam_args=list(beam_args), pattern=pattern)
        except WarehouseError as e:
            raise click.ClickException(str(e)) from None
        clirender.err_console.print(f"stopped: {ust.segments} segments in {ust.ticks} committed ticks")
        return
    if pattern or stop_after is not None:
        raise click.UsageError("--watch and --stop-after need --unbounded")

    def show(report, stats):
        clirender.err_console.print(
            f"committed {report.run_id}: {report.inputs_new} segment(s), "
            + ", ".join(f"{t}={n}" for t, n in sorted(report.rows.items()) if t in ("spans", "logs", "usage_events", "quarantine"))
            + f" ({report.seconds:.1f}s; {stats.segments} segments in {stats.micro_batches} micro-batches)"
        )

    clirender.err_console.print(f"tenantry run stream: watching {landing} → {warehouse} (Ctrl-C to stop)")
    try:
        stats = run_stream(landing, warehouse, cfg, poll_interval=poll_interval, max_segments=max_segments,
                           beam_args=list(beam_args), on_commit=show, idle_exit_after=exit_when_idle)
    except WarehouseError as e:
        raise click.ClickException(str(e)) from None
    clirender.err_console.print(f"stopped: {stats.segments} segments in {stats.micro_batches} micro-batches")


@main.command()
@click.option("--warehouse", required=True, type=click.Path(file_okay=False), help="Warehouse folder.")
@click.option("--small-run-mb", default=64, show_default=True, type=click.IntRange(1),
              help="Runs smaller than this are folded together.")
@click.option("--grace-minutes", default=10.0, show_default=True, type=click.FloatRange(0),
              help="Files of runs replaced longer ago than this are deleted.")
def compact(warehouse, small_run_mb, grace_minutes):
    """Fold many small runs into one, atomically; every figure stays the same."""
    import datetime as dt

    from tenantry.compaction import compact as compact_runs
    from tenantry.warehouse import Warehouse, WarehouseError

    try:
        wh = Warehouse(warehouse)
        wh.connect().close()  # a clear error when there is no warehouse here
        with wh.writer_lock():
            r = compact_runs(wh, small_run_bytes=small_run_mb * 2**20, grace=dt.timedelta(minutes=grace_minutes))
    except WarehouseError as e:
        raise click.ClickException(str(e)) from None
    if r.run_id is None:
        click.echo(f"nothing to compact; removed {r.deleted_runs} replaced run(s)")
    else:
        click.echo(f"compacted {r.replaced} runs ({r.files_before} files, {r.bytes / 2**20:.1f} MiB) into {r.run_id} "
                   f"({r.files_after} files); removed {r.deleted_runs} replaced run(s)")


# -- query --------------------------------------------------------------------------------------


@main.command()
@click.option("--warehouse", required=True, type=click.Path(file_okay=False), help="Warehouse folder.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--tenant", help="Scope every view to this one tenant.")
@click.option("--max-rows", default=1000, show_default=True, type=click.IntRange(1), help="Rows shown in a table.")
@click.argument("sql")
def query(warehouse, fmt, tenant, max_rows, sql):
    """Run SQL on the warehouse (read-only) and print the result."""
    from tenantry import querying
    from tenantry.warehouse import WarehouseError

    try:
        result = querying.run(warehouse, sql, tenant=tenant)
    except (WarehouseError, querying.QueryError) as e:
        raise click.ClickException(str(e)) from None
    clirender.print_result(result, fmt, max_rows)


@main.command()
@click.option("--warehouse", required=True, type=click.Path(file_okay=False), help="Warehouse folder.")
@click.option("--rebuild", is_flag=True,
              help="First rebuild the views from this tenantry's sql/ (after an upgrade); readers are not disturbed.")
def views(warehouse, rebuild):
    """List the views of a warehouse with their columns."""
    from tenantry import querying
    from tenantry.warehouse import Warehouse, WarehouseError

    try:
        if rebuild:
            wh = Warehouse(warehouse)
            wh.connect().close()  # a clear error when there is no warehouse here
            with wh.writer_lock():
                built = wh.build_views()
            clirender.err_console.print(f"rebuilt {len(built)} views" if built else "views are up to date")
        result = querying.describe_views(warehouse)
    except WarehouseError as e:
        raise click.ClickException(str(e)) from None
    clirender.print_result(result, "table", 10_000)


# -- processors ---------------------------------------------------------------------------------


@main.group()
def processors() -> None:
    """Inspect the processor chain."""


@processors.command("check")
@click.argument("config_path", type=click.Path(dir_okay=False))
def processors_check(config_path):
    """Validate tenantry.yaml's processors and print the chain in order."""
    cfg = _load_config(config_path)
    from collector_processors.base import ProcessorConfigError

    try:
        from collector_processors.registry import build_chain, describe_chain
    except ImportError:
        raise click.ClickException("collector_processors.registry is not available in this build") from None
    try:
        chain = build_chain(cfg)
    except ProcessorConfigError as e:
        raise click.ClickException(f"{config_path}: {e}") from None
    clirender.print_chain(describe_chain(chain), config_path)


# -- dashboards ---------------------------------------------------------------------------------


@main.group()
def dashboard() -> None:
    """Build dashboards from dashboards/ definitions."""


def _register_dashboard_commands() -> None:
    from tenantry.dashboards.cli import build_command, check_command, serve_command

    dashboard.add_command(build_command, "build")
    dashboard.add_command(check_command, "check")
    dashboard.add_command(serve_command, "serve")


_register_dashboard_commands()


# -- demo ---------------------------------------------------------------------------------------


@main.command()
@click.option("--dir", "directory", default="./tenantry-demo", show_default=True, type=click.Path(file_okay=False),
              help="Where everything the demo makes goes.")
@click.option("--requests", "n_requests", default=600, show_default=True, type=click.IntRange(10, 100_000),
              help="Requests the sample app serves.")
@click.option("--live", is_flag=True, help="Run collect + stream with the app sending continuously.")
@click.option("--seconds", default=60.0, show_default=True, type=click.FloatRange(5, 3600),
              help="How long --live runs.")
def demo(directory, n_requests, live, seconds):
    """Receive, process and show a multi-tenant sample app's telemetry, end to end."""
    from tenantry.demo import run as demo_run

    try:
        if live:
            demo_run.run_live(Path(directory), seconds=seconds)
        else:
            demo_run.run(Path(directory), n_requests=n_requests)
    except demo_run.DemoError as e:
        raise click.ClickException(str(e)) from None


def _register_feature_commands() -> None:
    """Commands that live with their feature's package (each module is a thin click layer)."""
    from tenantry.alerts_cli import alerts
    from tenantry.billing.cli import COMMANDS as billing_commands
    from tenantry.cost.cli import cost
    from tenantry.ledger.cli import ledger

    for cmd in (alerts, ledger, cost, *billing_commands):
        main.add_command(cmd)


_register_feature_commands()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
