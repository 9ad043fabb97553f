"""Click commands for ``tenantry dashboard``: ``check``, ``serve`` (and ``build``, with pickers).

The lead registers them on the ``dashboard`` group in tenantry/cli.py::

    from tenantry.dashboards.cli import build_command, check_command, serve_command
    dashboard.add_command(check_command, "check")
    dashboard.add_command(serve_command, "serve")
"""

from __future__ import annotations

import ipaddress
import sys

import click

from tenantry.dashboards.query import PERIODS, RANGES

_LOOPBACK_NAMES = {"localhost"}


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:8050`` for IPv6) -> (host, port); raises click.BadParameter."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise click.BadParameter(f"{listen!r}: expected HOST:PORT, e.g. 127.0.0.1:8050", param_hint="--listen")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command("check")
@click.option("--warehouse", required=True, type=click.Path(file_okay=False), help="Warehouse folder.")
@click.option("--strict", is_flag=True, help="Also fail when a panel's view does not exist yet.")
def check_command(warehouse, strict):
    """Validate every dashboard definition against a warehouse and run every panel once."""
    from tenantry.dashboards.check import check
    from tenantry.warehouse import WarehouseError

    try:
        findings = check(warehouse)
    except WarehouseError as e:
        raise click.ClickException(str(e)) from None
    for f in findings:
        click.echo(str(f), err=f.level == "error")
    errors = sum(f.level == "error" for f in findings)
    missing = sum(f.level == "missing" for f in findings)
    click.echo(f"{errors} error(s), {missing} panel(s) not available yet")
    if errors or (strict and missing):
        sys.exit(1)


@click.command("serve")
@click.option("--warehouse", required=True, type=click.Path(file_okay=False), help="Warehouse folder.")
@click.option("--listen", default="127.0.0.1:8050", show_default=True, help="HOST:PORT to listen on.")
@click.option("--public", is_flag=True, help="Allow a non-loopback address (there is no authentication).")
@click.option("--range", "time_range", type=click.Choice(list(RANGES)), default="7d", show_default=True,
              help="Default time range.")
@click.option("--period", type=click.Choice(PERIODS), default="day", show_default=True, help="Default period.")
def serve_command(warehouse, listen, public, time_range, period):
    """Serve the dashboards live, read-only, with tenant, time-range and period pickers."""
    import uvicorn

    from tenantry.dashboards.model import DashboardError
    from tenantry.dashboards.query import Selection
    from tenantry.dashboards.serve import create_app
    from tenantry.warehouse import Warehouse

    host, port = parse_listen(listen)
    loopback = is_loopback(host)
    if not loopback and not public:
        raise click.ClickException(
            f"{host} is not a loopback address and the dashboards have no authentication; "
            "pass --public to serve them anyway (behind an authenticating proxy)")
    if not Warehouse(warehouse).exists():
        raise click.ClickException(f"{warehouse}: no warehouse here; run `tenantry run batch` first")
    try:
        app = create_app(warehouse, default=Selection(time_range, period),
                         allowed_hosts=["127.0.0.1", "localhost", "::1", "[::1]"] if loopback else None)
    except DashboardError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"dashboards on http://{listen}/ (tenant views under /tenant/<id>)")
    uvicorn.run(app, host=host, port=port, log_level="warning")


@click.command("build")
@click.option("--warehouse", required=True, type=click.Path(file_okay=False), help="Warehouse folder.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the HTML pages.")
@click.option("--tenant", help="Only this tenant's pages, with only its data.")
@click.option("--range", "time_range", type=click.Choice(list(RANGES)), default="all", show_default=True,
              help="Time range the pages show.")
@click.option("--period", type=click.Choice(PERIODS), default="day", show_default=True, help="Period to bucket by.")
@click.option("--strict", is_flag=True, help="Fail (after writing) when a panel's query fails.")
def build_command(warehouse, out, tenant, time_range, period, strict):
    """Write self-contained HTML dashboards (charts work offline) and an index page."""
    from tenantry import dashboards
    from tenantry.warehouse import WarehouseError

    try:
        pages = dashboards.build(warehouse, out, tenant=tenant, strict=strict,
                                 selection=dashboards.Selection(time_range, period))
    except (WarehouseError, dashboards.DashboardError) as e:
        raise click.ClickException(str(e)) from None
    for p in pages:
        click.echo(str(p))
