"""``tenantry alerts``: list firing SLO, noisy-neighbour and security alerts (thin over tenantry.alerts)."""

from __future__ import annotations

import json

import click

from tenantry import alerts as lib
from tenantry.warehouse import WarehouseError


@click.command("alerts")
@click.option("--warehouse", required=True, type=click.Path(file_okay=False), help="Warehouse folder.")
@click.option("--since", default="24h", show_default=True, help="How far back: 30m, 24h, 7d...")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--webhook", default=None, help="Also POST the alerts as JSON to this URL.")
def alerts(warehouse: str, since: str, fmt: str, webhook: str | None) -> None:
    """List firing SLO burn-rate, noisy-neighbour and security alerts of a warehouse."""
    try:
        found = lib.firing_alerts(warehouse, lib.parse_since(since))
        if webhook:
            lib.post_webhook(webhook, found)
    except (lib.AlertError, WarehouseError) as e:
        raise click.ClickException(str(e)) from None
    if fmt == "json":
        click.echo(json.dumps({"alerts": [a.to_json() for a in found]}, indent=1, default=str))
        return
    if not found:
        click.echo(f"no alerts firing in the last {since}")
        return
    from tenantry import clirender

    clirender.console.print(clirender.table(
        ["time", "severity", "source", "tenant_id", "summary"],
        [(a.time, a.severity, a.source, a.tenant_id, a.summary) for a in found],
        title=f"alerts firing in the last {since}",
    ))
