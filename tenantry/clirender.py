"""How the CLI shows things: readable tables, progress while it works, CSV/JSON for machines."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import decimal
import json
import sys
import time

from rich.console import Console
from rich.table import Table

# wide enough for a summary table when output is piped (rich assumes 80 columns then)
console = Console(stderr=False, highlight=False, width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, highlight=False)


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:,.3f}".rstrip("0").rstrip(".") if abs(v) < 1e15 else repr(v)
    if isinstance(v, decimal.Decimal):
        return format(v.normalize(), "f") if v == v.to_integral_value() or True else str(v)
    if isinstance(v, (dt.datetime, dt.date)):
        return v.isoformat()
    return str(v)


def _json_default(v):
    if isinstance(v, decimal.Decimal):
        return str(v)  # exact: money and quantities never go through float
    if isinstance(v, (dt.datetime, dt.date)):
        return v.isoformat()
    return str(v)


def table(columns, rows, title: str | None = None, max_rows: int | None = None) -> Table:
    t = Table(title=title, show_lines=False, header_style="bold")
    for c in columns:
        t.add_column(str(c), overflow="fold")
    shown = rows if max_rows is None else rows[:max_rows]
    for r in shown:
        # markup is off: a tenant id like "[red]x" must print as itself
        t.add_row(*[_escape(_cell(v)) for v in r])
    if max_rows is not None and len(rows) > max_rows:
        t.caption = f"{len(rows) - max_rows} more rows not shown (use --max-rows or --format csv)"
    return t


def _escape(s: str) -> str:
    from rich.markup import escape

    return escape(s)


def print_result(result, fmt: str, max_rows: int) -> None:
    if fmt == "csv":
        w = csv.writer(sys.stdout)
        w.writerow(result.columns)
        for r in result.rows:
            w.writerow([_json_default(v) if v is not None and not isinstance(v, (int, float, str)) else v for v in r])
    elif fmt == "json":
        json.dump([dict(zip(result.columns, r)) for r in result.rows], sys.stdout, default=_json_default, indent=1)
        sys.stdout.write("\n")
    else:
        console.print(table(result.columns, result.rows, max_rows=max_rows))
        console.print(f"{len(result.rows)} row(s)", style="dim")


@contextlib.contextmanager
def progress(what: str):
    """A live status line with elapsed time while a long step runs."""
    start = time.monotonic()
    with err_console.status(f"[bold]{what}[/bold]…", spinner="dots") as status:
        yield status
    err_console.print(f"[green]✓[/green] {what} ({time.monotonic() - start:.1f}s)")


def print_run_report(report, warehouse, fmt: str) -> None:
    if fmt == "json":
        from pipelines.batch import report_json

        print(report_json(report))
        return
    if not report.committed:
        console.print(f"Nothing new: all {report.inputs_total} input(s) were already processed into {warehouse}.")
        return
    rows = sorted(report.rows.items())
    console.print(table(["lake table", "rows written"], rows, title=f"run {report.run_id}"))
    console.print(
        f"{report.inputs_new} new input(s), {report.skipped} already processed; {report.seconds:.1f}s. "
        f"Query with: tenantry query --warehouse {warehouse} \"select * from tenant_sre_hourly\""
    )
    if report.accounting:
        console.print(accounting_table(report.accounting))
    led = getattr(report, "ledger", None)
    if led is not None:
        console.print(
            f"ledger: {led.events_in} usage events, {led.accepted} accepted, {led.duplicates} duplicates, "
            f"{sum(led.quarantined.values())} quarantined, {led.entries_written} entries written"
            + (f"; undeclared meters: {', '.join(led.undeclared_meters)}" if led.undeclared_meters else "")
        )


def accounting_table(accounting: list[tuple]) -> Table:
    """A run's (table, in, kept, quarantined, sampled out) rows, each checked for balance."""
    rows = [(*r, "ok" if r[1] == r[2] + r[3] + r[4] else "MISMATCH") for r in accounting]
    return table(["table", "in", "kept", "quarantined", "sampled out", "balanced"], rows,
                 title="accounting: in = kept + quarantined + sampled out")


def print_chain(rows: list[dict], source: str) -> None:
    cols = ["#", "name", "type", "options"]
    data = [(i + 1, r.get("name"), r.get("type"), r.get("options", "")) for i, r in enumerate(rows)]
    console.print(table(cols, data, title=f"processor chain of {source}"))
    console.print("configuration is valid", style="green")
