"""Consumption drivers per tenant and day, measured from the warehouse's telemetry views.

A driver is what a ``proportional`` cost rule splits a cost line by:

=====================  ===========================================================  ==========
driver                 measured as (per UTC day, per tenant)                        from view
=====================  ===========================================================  ==========
``requests``           server requests (re-weighted for sampling)                    tenant_sre_hourly
``duration``           total server span time in ms (``requests * mean_ms``)         tenant_sre_hourly
``meter:<name>``       the meter's daily quantity (as the usage ledger holds it)     tenant_usage_daily
``attribute:<key>``    sum of a numeric span attribute × ``sample_weight``           spans
                       (e.g. ``http.response.body.size`` for bytes)
``dynamodb_capacity``  sum of ``CapacityUnits`` in ``aws.dynamodb.consumed_capacity``  spans
                       (OTel semantic conventions: a JSON array of JSON objects)
=====================  ===========================================================  ==========

``driver_services`` restricts the telemetry to some ``service_name``s (not for meters, which
have no service). Quantities are exact ``decimal(38, 9)``; non-finite and negative values are
ignored. ``__unattributed__`` telemetry is measured too: its share of a cost line is reported
as unallocated (reason ``unattributed_usage``), not spread over tenants.

Every value (tenant ids, service names, meter names, attribute keys) is a bound parameter.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import pyarrow as pa

from tenantry.cost.rules import Rule
from tenantry.schemas import QUANTITY

DRIVER_SCHEMA = pa.schema([
    pa.field("day", pa.date32(), nullable=False),
    pa.field("tenant_id", pa.string(), nullable=False),
    pa.field("driver_key", pa.string(), nullable=False),
    pa.field("quantity", QUANTITY, nullable=False),
])

DYNAMODB_CAPACITY_KEY = "aws.dynamodb.consumed_capacity"


def driver_key(driver: str, services: list[str] | None) -> str:
    """The identity of a (driver, service filter) pair, as stored on allocation rows."""
    return driver if not services else f"{driver}@{','.join(sorted(services))}"


def rule_key(rule: Rule) -> str | None:
    return driver_key(rule.driver, rule.driver_services) if rule.driver else None


_SVC = "and ($all_services or service_name in (select unnest($services::varchar[])))"

_QUERIES = {
    "requests": f"""
        select (hour at time zone 'UTC')::date as day, tenant_id, sum(requests) as q
        from tenant_sre_hourly
        where hour >= $start and hour < $end {_SVC}
        group by all""",
    "duration": f"""
        select (hour at time zone 'UTC')::date as day, tenant_id, sum(requests * coalesce(mean_ms, 0)) as q
        from tenant_sre_hourly
        where hour >= $start and hour < $end {_SVC}
        group by all""",
    "meter": """
        select day, tenant_id, sum(quantity)::double as q
        from tenant_usage_daily
        where meter = $name and day >= $start::date and day < $end::date
        group by all""",
    "attribute": f"""
        select (start_time at time zone 'UTC')::date as day, tenant_id,
               sum(try_cast(attributes[$name] as double) * sample_weight) as q
        from spans
        where start_time >= $start and start_time < $end {_SVC}
        group by all""",
    "dynamodb_capacity": f"""
        with items as (
            select start_time, tenant_id, sample_weight,
                   unnest(json_extract_string(attributes[$name], '$[*]')) as item
            from spans
            where start_time >= $start and start_time < $end {_SVC}
              and attributes[$name] is not null and json_valid(attributes[$name])
        )
        select (start_time at time zone 'UTC')::date as day, tenant_id,
               sum(coalesce(try_cast(json_extract_string(item, '$.CapacityUnits') as double), 0) * sample_weight) as q
        from items
        group by all""",
}


def _query_for(driver: str) -> tuple[str, str | None]:
    kind, _, name = driver.partition(":")
    if kind == "dynamodb_capacity":
        return _QUERIES[kind], DYNAMODB_CAPACITY_KEY
    return _QUERIES[kind], (name or None)


def measure(con: duckdb.DuckDBPyConnection, drivers: list[tuple[str, list[str] | None]],
            start: dt.date, end: dt.date) -> tuple[pa.Table, list[str]]:
    """Driver quantities for days in ``[start, end)``: (table with :data:`DRIVER_SCHEMA`, warnings).

    A driver whose view is missing (no telemetry run yet) measures nothing and adds a warning.
    """
    con.execute("set timezone = 'UTC'")
    parts, warnings = [], []
    start_ts = dt.datetime.combine(start, dt.time(), dt.timezone.utc)
    end_ts = dt.datetime.combine(end, dt.time(), dt.timezone.utc)
    for driver, services in sorted(set((d, tuple(s) if s else None) for d, s in drivers), key=str):
        sql, name = _query_for(driver)
        params = {"start": start_ts, "end": end_ts}
        if "$name" in sql:
            params["name"] = name
        if "$services" in sql:
            params["all_services"] = not services
            params["services"] = list(services or [])
        try:
            raw = con.sql(
                f"select day, tenant_id, $key as driver_key, round(q, 9)::decimal(38, 9) as quantity "
                f"from ({sql}) where q is not null and isfinite(q) and q > 0 and tenant_id is not null",
                params={**params, "key": driver_key(driver, list(services) if services else None)},
            ).to_arrow_table()
        except duckdb.CatalogException as e:
            warnings.append(f"driver {driver}: no telemetry view to measure it ({str(e).splitlines()[0]}); "
                            "run `tenantry run batch` first")
            continue
        parts.append(raw.cast(DRIVER_SCHEMA))
    table = pa.concat_tables(parts) if parts else DRIVER_SCHEMA.empty_table()
    return table, warnings
