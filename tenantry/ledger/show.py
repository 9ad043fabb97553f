"""Reading the ledger for people: balances of one tenant and/or one period (``tenantry ledger show``)."""

from __future__ import annotations

import datetime as dt
import re

from tenantry import querying
from tenantry.warehouse import Warehouse

_PERIOD = re.compile(r"\A(\d{4})(?:-(\d{2})(?:-(\d{2})(?:[T ](\d{2}))?)?)?\Z")


class PeriodError(ValueError):
    """A --period value is not YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDTHH."""


def parse_period(text: str) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) in UTC of ``2026``, ``2026-03``, ``2026-03-01`` or ``2026-03-01T13``."""
    m = _PERIOD.match(text.strip()) if isinstance(text, str) else None
    if not m:
        raise PeriodError(f"period {str(text)[:40]!r}: use YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDTHH (UTC)")
    y, mo, d, h = (int(g) if g else None for g in m.groups())
    try:
        start = dt.datetime(y, mo or 1, d or 1, h or 0, tzinfo=dt.timezone.utc)
        if h is not None:
            end = start + dt.timedelta(hours=1)
        elif d is not None:
            end = start + dt.timedelta(days=1)
        elif mo is not None:
            end = start.replace(year=y + (mo == 12), month=mo % 12 + 1)
        else:
            end = start.replace(year=y + 1)
    except (ValueError, OverflowError) as e:
        raise PeriodError(f"period {text!r}: {e}") from None
    return start, end


def balances(warehouse: str, tenant: str | None = None, period: str | None = None) -> querying.QueryResult:
    """Rows of ``ledger_balance`` (tenant-scoped when ``tenant`` is given) whose period starts
    within ``period``. The tenant id and the bounds are bound parameters, never spliced into SQL."""
    sql = ("select tenant_id, meter, period_start, period_end, dimensions_key as dimensions, quantity, unit, "
           "event_count, revisions, adjustments from ledger_balance")
    params: list = []
    if period is not None:
        start, end = parse_period(period)
        sql += " where period_start >= ? and period_start < ?"
        params += [start, end]
    sql += " order by tenant_id, meter, period_start, dimensions_key"
    con = querying.tenant_connection(warehouse, tenant) if tenant is not None else Warehouse(warehouse).connect()
    try:
        cur = con.execute(sql, params)
        return querying.QueryResult([c[0] for c in cur.description], cur.fetchall())
    finally:
        con.close()
