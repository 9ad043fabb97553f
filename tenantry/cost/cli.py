"""``tenantry cost``: ingest cost files, allocate them again, and report cost and margin per tenant.

\b
  tenantry cost ingest --warehouse ./wh focus-2026-11.csv s3://bucket/cur/
  tenantry cost allocate --warehouse ./wh --config tenantry.yaml
  tenantry cost report --warehouse ./wh --period 2026-11
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re

import click

from tenantry import clirender

_PERIOD_RE = re.compile(r"\A(\d{4})-(\d{2})\Z")


@dataclasses.dataclass
class CostReport:
    period: str
    totals: dict  # input, allocated, platform, unallocated (Decimal), currency-agnostic sums
    by_cost: tuple[list[str], list[tuple]]
    by_margin: tuple[list[str], list[tuple]]
    least_profitable: tuple[list[str], list[tuple]]
    negative: list[str]  # tenant ids with a negative gross margin


def period_bounds(period: str) -> tuple[dt.date, dt.date]:
    m = _PERIOD_RE.match(period or "")
    if not m or not 1 <= int(m.group(2)) <= 12:
        raise click.BadParameter(f"expected a month as YYYY-MM (e.g. 2026-11), got {period!r}", param_hint="--period")
    start = dt.date(int(m.group(1)), int(m.group(2)), 1)
    return start, (start + dt.timedelta(days=32)).replace(day=1)


def build_report(warehouse: str, period: str, top: int = 10) -> CostReport:
    """The figures ``tenantry cost report`` prints, from the warehouse views (read-only)."""
    from tenantry.warehouse import Warehouse

    start, end = period_bounds(period)
    con = Warehouse(warehouse).connect()
    try:
        def q(sql: str, params: list) -> tuple[list[str], list[tuple]]:
            cur = con.execute(sql, params)
            return [d[0] for d in cur.description], cur.fetchall()

        tot = con.execute(
            "select (select coalesce(sum(amount), 0) from stg_cost_lines where day >= ? and day < ?), "
            "(select coalesce(sum(cost), 0) from tenant_cost_daily where day >= ? and day < ? and tenant_id <> '__platform__'), "
            "(select coalesce(sum(cost), 0) from tenant_cost_daily where day >= ? and day < ? and tenant_id = '__platform__'), "
            "(select coalesce(sum(cost), 0) from unallocated_cost where day >= ? and day < ?)",
            [start, end] * 4).fetchone()
        margin = ("select tenant_id, currency, revenue, cost, gross_margin, margin_pct from tenant_margin_monthly "
                  "where period_start = ? ")
        by_cost = q(margin + "order by cost desc, tenant_id limit ?", [start, top])
        by_margin = q(margin + "order by gross_margin desc, tenant_id limit ?", [start, top])
        least = q(margin + "order by gross_margin asc, tenant_id limit ?", [start, top])
        negative = [r[0] for r in con.execute(margin + "and gross_margin < 0 order by gross_margin", [start]).fetchall()]
    finally:
        con.close()
    totals = dict(zip(["input", "allocated", "platform", "unallocated"], tot))
    return CostReport(period, totals, by_cost, by_margin, least, negative)


def _print(report: CostReport) -> None:
    console = clirender.console
    t = report.totals
    console.print(f"[bold]cost for {report.period}[/bold]: input {t['input']} = tenants {t['allocated']} "
                  f"+ platform {t['platform']} + unallocated {t['unallocated']}"
                  + ("" if t["input"] == t["allocated"] + t["platform"] + t["unallocated"] else "  [red]MISMATCH[/red]"))
    for title, (cols, rows) in (("top tenants by cost", report.by_cost), ("top tenants by margin", report.by_margin),
                                ("least profitable tenants", report.least_profitable)):
        console.print(clirender.table(cols, rows, title=title))
    if report.negative:
        console.print(f"[bold red]negative margin[/bold red]: {len(report.negative)} tenant(s): "
                      + ", ".join(clirender._escape(x) for x in report.negative))
    else:
        console.print("no tenant has a negative margin", style="green")


def _cfg(path):
    from tenantry import config

    try:
        return config.load(path)
    except config.ConfigError as e:
        raise click.ClickException(str(e)) from None


@click.group("cost")
def cost() -> None:
    """Cloud cost per tenant: ingest FOCUS / AWS CUR 2.0 / cost.csv files, allocate, report margin."""


@cost.command("ingest")
@click.option("--warehouse", required=True, type=click.Path(file_okay=False), help="Warehouse folder.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="tenantry.yaml (cost: rules).")
@click.argument("paths", nargs=-1, required=True)
def ingest_cmd(warehouse, config_path, paths):
    """Ingest cost files (files, folders or s3://bucket/prefix) and allocate them to tenants.

    Each file is one run keyed by its content hash: ingesting the same file again adds nothing.
    """
    from tenantry.cost import CostConfigError, CostInputError, ingest
    from tenantry.warehouse import WarehouseError

    cfg = _cfg(config_path)
    try:
        with clirender.progress(f"cost ingest of {len(paths)} path(s)"):
            report = ingest(warehouse, list(paths), cfg)
    except (CostInputError, CostConfigError, WarehouseError) as e:
        raise click.ClickException(str(e)) from None
    rows = [(r["source_key"], r["format"], r["lines"], r["total"], r["run_id"]) for r in report.ingested]
    clirender.console.print(clirender.table(["file", "format", "cost lines", "total", "run"], rows, title="ingested"))
    for s in report.skipped:
        clirender.console.print(f"already ingested (same content): {clirender._escape(s)}", style="dim")
    for w in report.warnings:
        clirender.err_console.print(f"warning: {clirender._escape(w)}", style="yellow")


@cost.command("allocate")
@click.option("--warehouse", required=True, type=click.Path(file_okay=False), help="Warehouse folder.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="tenantry.yaml (cost: rules).")
def allocate_cmd(warehouse, config_path):
    """Allocate every ingested cost file again (after new telemetry or changed rules)."""
    from tenantry.cost import CostConfigError, reallocate
    from tenantry.warehouse import WarehouseError

    try:
        report = reallocate(warehouse, _cfg(config_path))
    except (CostConfigError, WarehouseError) as e:
        raise click.ClickException(str(e)) from None
    clirender.console.print(f"reallocated {len(report.ingested)} cost file(s); {len(report.skipped)} unchanged")


@cost.command("report")
@click.option("--warehouse", required=True, type=click.Path(file_okay=False), help="Warehouse folder.")
@click.option("--period", required=True, help="Month, YYYY-MM.")
@click.option("--top", default=10, show_default=True, type=click.IntRange(1, 1000), help="Rows per table.")
def report_cmd(warehouse, period, top):
    """Top tenants by cost and by margin, the least profitable, and negative margins."""
    import duckdb

    from tenantry.warehouse import WarehouseError

    try:
        report = build_report(warehouse, period, top)
    except (WarehouseError, duckdb.Error) as e:
        raise click.ClickException(f"{e} (ingest cost first: tenantry cost ingest --warehouse {warehouse} FILE)") from None
    _print(report)
