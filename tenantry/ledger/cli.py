"""``tenantry ledger ...`` commands (thin over :mod:`tenantry.ledger.show`).

Registered by the main CLI with ``main.add_command(tenantry.ledger.cli.ledger)``.
"""

from __future__ import annotations

import click


@click.group()
def ledger() -> None:
    """Inspect the billing-ready usage ledger."""


@ledger.command("show")
@click.option("--warehouse", required=True, type=click.Path(file_okay=False), help="Warehouse folder.")
@click.option("--tenant", help="Only this tenant's balances.")
@click.option("--period", help="Only periods starting in YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDTHH (UTC).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--max-rows", default=1000, show_default=True, type=click.IntRange(1), help="Rows shown in a table.")
def show(warehouse, tenant, period, fmt, max_rows):
    """Balances per tenant, meter, period and dimensions: the sum of their ledger entries."""
    import duckdb

    from tenantry import clirender, querying
    from tenantry.ledger.show import PeriodError, balances
    from tenantry.warehouse import WarehouseError

    try:
        result = balances(warehouse, tenant=tenant, period=period)
    except (WarehouseError, querying.QueryError, PeriodError) as e:
        raise click.ClickException(str(e)) from None
    except duckdb.CatalogException:
        raise click.ClickException(
            f"{warehouse}: no ledger_balance view; run `tenantry run batch` with this version first"
        ) from None
    clirender.print_result(result, fmt, max_rows)
