"""The run's new ledger entries, aggregated from its accepted events (an Arrow table).

Accepted events are grouped by key (tenant, meter, period, dimensions); each key gets one entry
whose quantity is the change of the key's total (sum/count/unique_count: the new events' sum;
max and latest: the recomputed total over every accepted event minus the balance), so the
balance is always the sum of entries. The entry is ``usage`` while the period is open and
``adjustment`` once it closed (period_end + grace_period <= now); ``supersedes`` names the key's
previous entry. An index row names its entry by the entry's key and run (``ingest_batch``): a
run writes exactly one entry per key it touches.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from tenantry import schemas
from tenantry.ledger.settings import LedgerSettings

_PERIOD_LEN = "case {p} when 'hour' then interval 1 hour when 'month' then interval 1 month else interval 1 day end"
_NAIVE = "make_timestamp(epoch_ns({c}) // 1000)"


def ledger_entries(con: duckdb.DuckDBPyConnection, events: pa.Table, keep: pa.BooleanArray | None,
                   st: LedgerSettings, now: dt.datetime, run_id: str, pipeline_version: str) -> pa.Table:
    """USAGE_LEDGER rows of the run from the kept ``events`` (``Accepted``), ordered by key.
    ``_meters`` must be prepared on ``con`` (:func:`tenantry.ledger.compute.prepare_meters`)."""
    accepted = events if keep is None else events.append_column("keep", keep)
    con.register("_accepted", accepted)
    latest = [r[0] for r in con.execute("select name from _meters where aggregation = 'latest'").fetchall()]
    recomputed = [r[0] for r in con.execute(
        "select name from _meters where aggregation in ('max', 'latest') order by name").fetchall()]
    # history is read only for the periods this run touches and, per event, only for the meters
    # whose total is recomputed from events: static filters that Parquet statistics and DuckDB's
    # scan push down, so a steady-state run does not read every committed index row
    first_period = pc.min(events.column("period_start")).as_py()
    history = {"first_period": (first_period or dt.datetime(1970, 1, 1)).replace(tzinfo=dt.timezone.utc),
               **{f"rc_{i}": name for i, name in enumerate(recomputed)}}
    recomputed_in = ", ".join(f"$rc_{i}" for i in range(len(recomputed))) or "null"
    # the (time, event_id) keys of `latest` cost a struct per accepted row: only when a meter needs them
    latest_aggs = latest_case = h_latest = ""
    if latest:
        h_latest = """,
                       arg_max(quantity, (time, event_id)) as h_latest, max((time, event_id)) as h_latest_key"""
        latest_aggs = """,
                   arg_max(quantity, (time, event_id)) filter (where list_contains($latest, meter)) as q_latest,
                   max((time, event_id)) filter (where list_contains($latest, meter)) as latest_key"""
        latest_case = """                        when 'latest' then case when h.h_latest_key is null or n.latest_key > h.h_latest_key
                                                then n.q_latest else h.h_latest end
"""
    try:
        entries = con.sql(f"""
            with grouped as (
                select tenant_id, meter, period_start, dimensions_key, min(unit) as unit,
                       sum(quantity) as q_sum, count(*) as n, max(quantity) as q_max{latest_aggs}
                from _accepted {"" if keep is None else "where keep"}
                group by tenant_id, meter, period_start, dimensions_key
            ),
            new as (
                select g.*, coalesce(m.aggregation, 'sum') as aggregation, coalesce(m.unit, g.unit) as unit_out,
                       g.period_start + {_PERIOD_LEN.format(p="coalesce(m.period, 'day')")} as period_end
                from grouped g left join _meters m on m.name = g.meter
            ),
            prev as (
                select tenant_id, meter, period_start, dimensions_key, sum(quantity) as balance,
                       max(revision) as max_rev, arg_max(entry_id, revision) as last_entry
                from (select * replace ({_NAIVE.format(c='period_start')} as period_start) from hist_ledger
                      where period_start >= $first_period)
                semi join new using (tenant_id, meter, period_start, dimensions_key)
                group by all
            ),
            prev_ev as (
                select tenant_id, meter, period_start, dimensions_key, max(quantity) as h_max{h_latest}
                from (select * replace ({_NAIVE.format(c='period_start')} as period_start) from hist_index
                      where period_start >= $first_period and meter in ({recomputed_in}))
                semi join (select * from new where aggregation in ('max', 'latest'))
                    using (tenant_id, meter, period_start, dimensions_key)
                group by all
            ),
            final as (
                select n.tenant_id, n.meter, n.period_start, n.period_end,
                       n.dimensions_key::json::map(varchar, varchar) as dimensions, n.dimensions_key,
                       (case n.aggregation
                            when 'max' then greatest(n.q_max, coalesce(h.h_max, n.q_max))
{latest_case}                            else n.q_sum + coalesce(p.balance, 0)
                        end - coalesce(p.balance, 0))::decimal(38, 9) as quantity,
                       n.unit_out as unit, n.n as event_count, (coalesce(p.max_rev, 0) + 1)::integer as revision,
                       case when n.period_end + $grace <= $now_utc then 'adjustment' else 'usage' end as kind,
                       p.last_entry as supersedes
                from new n
                left join prev p using (tenant_id, meter, period_start, dimensions_key)
                left join prev_ev h using (tenant_id, meter, period_start, dimensions_key)
            )
            select substr(sha256(concat_ws(chr(31), tenant_id, meter, epoch_ns(period_start)::varchar,
                                           dimensions_key, revision::varchar)), 1, 32) as entry_id,
                   *, $now as computed_at, $version as pipeline_version, $run_id as ingest_batch
            from final
            order by tenant_id, meter, period_start, dimensions_key
        """, params={"now": now, "now_utc": now.astimezone(dt.timezone.utc).replace(tzinfo=None), "grace": st.grace_period,
              "version": pipeline_version, "run_id": run_id, **history, **({"latest": latest} if latest else {})}).to_arrow_table()
    finally:
        con.unregister("_accepted")
    return schemas.conform("usage_ledger", entries)
