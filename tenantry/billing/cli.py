"""Click commands ``bill``, ``export`` and ``reconcile``: thin over the billing library.

Register them on the main group with ``for c in COMMANDS: main.add_command(c)``.
"""

from __future__ import annotations

import click

from tenantry import clirender


def _cfg(path: str | None):
    from tenantry import config

    try:
        return config.load(path)
    except config.ConfigError as e:
        raise click.ClickException(str(e)) from None


def _errors():
    from tenantry.billing import BillingError
    from tenantry.billing.exporters import ExportConfigError, FatalExportError
    from tenantry.billing.plans import PlanError
    from tenantry.warehouse import WarehouseError

    return (BillingError, ExportConfigError, FatalExportError, PlanError, WarehouseError)


_warehouse = click.option("--warehouse", required=True, type=click.Path(file_okay=False), help="Warehouse folder.")
_config = click.option("--config", "config_path", type=click.Path(dir_okay=False), help="tenantry.yaml")


@click.command()
@_warehouse
@click.option("--period", required=True, help="Billing month, e.g. 2026-11.")
@_config
@click.option("--out", type=click.Path(file_okay=False), help="Folder for the CSV/JSON invoice (default WAREHOUSE/exports/invoices).")
def bill(warehouse, period, config_path, out):
    """Rate a period's usage ledger into invoice line drafts (view invoice_lines, CSV and JSON).

    Re-running after the ledger changed appends the difference as new lines; unchanged input
    appends nothing.
    """
    from tenantry.billing.invoice import bill as run

    cfg = _cfg(config_path)
    try:
        res = run(warehouse, cfg, period, out_dir=out, source=config_path or "tenantry.yaml")
    except _errors() as e:
        raise click.ClickException(str(e)) from None
    rows = [(t, cur, str(tot)) for t, (cur, tot) in sorted(res.totals.items())]
    clirender.console.print(clirender.table(["tenant", "currency", "total"], rows, title=f"invoice drafts {period}"))
    click.echo(f"{res.lines_written} new line(s)" + (f" in run {res.run_id}" if res.run_id else " (nothing changed)"))
    for f in res.files:
        click.echo(f"wrote {f}")


@click.command()
@click.option("--to", "target", required=True,
              type=click.Choice(["stripe", "marketplace", "amberflo", "eventbridge", "file"]), help="Where to push.")
@_warehouse
@click.option("--period", help="Only ledger entries of this month (e.g. 2026-11); default: every pending entry.")
@click.option("--dry-run", is_flag=True, help="Show what would be pushed; push and record nothing.")
@_config
def export(target, warehouse, period, dry_run, config_path):
    """Push ledger entries to a billing provider exactly once (outbox in the warehouse).

    Credentials come from the environment (STRIPE_API_KEY, AMBERFLO_API_KEY, the boto3 chain),
    never from tenantry.yaml. Failed pushes are retried with backoff, reported per tenant, and
    retried again by the next run.
    """
    import json
    from pathlib import Path

    from tenantry.billing import exporters
    from tenantry.billing.outbox import run_export

    cfg = _cfg(config_path)
    try:
        kw = {"root": Path(warehouse).resolve()} if target == "file" else {}
        exp = exporters.load(target, cfg.exports, **kw)
        rep = run_export(warehouse, cfg, exp, period=period, dry_run=dry_run)
    except _errors() as e:
        raise click.ClickException(str(e)) from None
    statuses = ["would_push"] if dry_run else ["acknowledged", "rejected", "stale", "failed"]
    statuses += ["deferred", "no_account"]
    rows = [(t, *(c[s] for s in statuses)) for t, c in sorted(rep.per_tenant.items())]
    clirender.console.print(clirender.table(["tenant", *statuses], rows, title=f"export to {target}"))
    for w in rep.warnings:
        click.echo(f"warning: {w}", err=True)
    for tenant, entry, why in rep.problems[:50]:
        click.echo(f"{tenant}: {entry}: {why}", err=True)
    if dry_run:
        for p in rep.payloads[:20]:
            click.echo(json.dumps(p, ensure_ascii=False))
    if rep.count("failed"):
        raise click.ClickException(f"{rep.count('failed')} entries failed; they stay pending for the next run")


@click.command()
@_warehouse
@click.option("--period", required=True, help="Billing month, e.g. 2026-11.")
@_config
def reconcile(warehouse, period, config_path):
    """Find revenue leakage: telemetry vs app usage, unexported or rejected entries, unbilled
    overage, tenants without a plan or billing account; amounts priced with each plan."""
    from tenantry.billing.reconcile import reconcile as run

    cfg = _cfg(config_path)
    try:
        rep = run(warehouse, cfg, period, source=config_path or "tenantry.yaml")
    except _errors() as e:
        raise click.ClickException(str(e)) from None
    rows = [(f["tenant_id"], f["kind"], f["meter"] or "", f["provider"] or "",
             "" if f["gap_quantity"] is None else str(f["gap_quantity"].normalize()),
             "" if f["amount_at_risk"] is None else f"{f['amount_at_risk']} {f['currency'] or ''}".strip(),
             f["detail"] or "") for f in rep.findings]
    clirender.console.print(clirender.table(["tenant", "finding", "meter", "provider", "gap", "at risk", "detail"],
                                            rows, title=f"revenue leakage {period}"))
    for t, (cur, amt) in sorted(rep.at_risk().items()):
        click.echo(f"{t}: {amt} {cur or ''} at risk".rstrip())
    if not rep.findings:
        click.echo("no leakage found")


COMMANDS = [bill, export, reconcile]
