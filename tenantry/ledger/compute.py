"""The ledger arithmetic of one run, in DuckDB: classify, deduplicate, aggregate, write deltas.

Inputs (relations on the connection the caller prepares):

- ``new_events``: the run's usage_events rows (any number, any order, duplicates included);
- ``meters``: one row per declared meter (name, unit, aggregation, period, group_by);
- ``hist_ledger`` / ``hist_index``: the committed ``usage_ledger`` / ``usage_dedup`` rows.

Outputs: the run's new ledger entries (one per touched (tenant, meter, period, dimensions) key),
dedup-index rows (one per accepted event, naming its entry), quarantine rows, and counts.

The rules, in order: an event is quarantined when its quantity is negative, its meter is
undeclared under ``strict``, or its time is outside [now - max_past_days, now +
max_future_minutes]; of the rest, the first occurrence of each (tenant_id, event_id) in the run
is kept (earliest time, then a fixed tie-break) unless the committed index already holds that id
within the dedup window. Accepted events are grouped by key; each key gets one entry whose
quantity is the change of the key's total (sum/count/unique_count: the new events' sum; max and
latest: the recomputed total over every accepted event minus the balance), so the balance is
always the sum of entries. The entry is ``usage`` while the period is open and ``adjustment``
once it closed (period_end + grace_period <= now); ``supersedes`` names the key's previous entry.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import duckdb
import pyarrow as pa

from tenantry import schemas
from tenantry.ledger.settings import LedgerSettings

_PERIOD_START = (
    "case {p} when 'hour' then date_trunc('hour', {t}) when 'month' then date_trunc('month', {t}) "
    "else date_trunc('day', {t}) end"
)
_PERIOD_LEN = "case {p} when 'hour' then interval 1 hour when 'month' then interval 1 month else interval 1 day end"
def _dims_key_sql(con: duckdb.DuckDBPyConnection) -> tuple[str, dict]:
    """SQL for ``dimensions_key`` (over columns ``group_by`` and ``dimensions``) and its parameters.

    The key is the canonical JSON of the kept dimensions: ``{"k1":"v1","k2":null}`` with the
    declared names present in the map, sorted by name (UTF-8 byte order, as DuckDB sorts), values
    JSON-escaped; ``{}`` when none is kept. One branch per distinct ``group_by`` list, built from
    the meters: a direct lookup per declared name is far cheaper than filtering and sorting
    every map's entries. Names go in as parameters, so any meter or dimension name is safe.
    """
    lists = [r[0] for r in con.execute(
        "select distinct group_by from meters where len(group_by) > 0 order by group_by").fetchall()]
    params: dict = {}
    branches = []
    for i, names in enumerate(lists):
        params[f"gb_{i}"] = names
        pieces = []
        for j, name in enumerate(sorted(set(names), key=lambda n: n.encode())):
            k = f"gb_{i}_{j}"
            params[k] = name
            pieces.append(f"case when map_contains(dimensions, ${k}) then to_json(${k})::varchar || ':' || "
                          f"coalesce(to_json(dimensions[${k}])::varchar, 'null') end")
        branches.append(f"when group_by = $gb_{i} then '{{' || concat_ws(',', {', '.join(pieces)}) || '}}'")
    if not branches:
        return "'{}'", params
    return f"case when len(group_by) = 0 then '{{}}' {' '.join(branches)} end", params


METERS_SCHEMA = pa.schema([
    ("name", pa.string()), ("unit", pa.string()), ("aggregation", pa.string()), ("period", pa.string()),
    ("group_by", pa.list_(pa.string())),
])


@dataclasses.dataclass
class Computed:
    entries: pa.Table
    quarantine: pa.Table
    counts: dict
    undeclared: list[str]


def meters_table(meters) -> pa.Table:
    """The ``meters`` relation: declared meters with their ledger grouping (dimension names)."""
    from tenantry.meters import compile_meters

    rows = [
        {"name": cm.meter.name, "unit": cm.meter.unit, "aggregation": cm.meter.aggregation,
         "period": cm.meter.period, "group_by": [name for name, _ in cm.group_by]}
        for cm in compile_meters(list(meters))
    ]
    return pa.Table.from_pylist(rows, schema=METERS_SCHEMA)


def compute(con: duckdb.DuckDBPyConnection, st: LedgerSettings, now: dt.datetime, run_id: str,
            pipeline_version: str) -> Computed:
    """Run the ledger rules; leaves view ``accepted_index`` on ``con`` for the caller to stream.

    The index rows come in no particular order (sorting them cost more than the rest of the
    index): readers select by (tenant_id, event_id) or by entry, never by position.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    params = {
        "now": now, "strict": st.strict, "max_past": dt.timedelta(days=st.max_past_days),
        "max_future": dt.timedelta(minutes=st.max_future_minutes),
        "window": dt.timedelta(days=st.dedup_window_days), "grace": st.grace_period,
    }
    con.execute("set TimeZone = 'UTC'")
    dims_key, dims_params = _dims_key_sql(con)
    # one slim pass over the events: dimension maps become their canonical key here, and only a
    # quarantined event keeps its raw form (DuckDB evaluates CASE branches on the selected rows only)
    con.execute(f"""
        create or replace temp table classified as
        with e as (
            select ev.event_id, ev.tenant_id, ev.meter, ev.quantity::decimal(38, 9) as quantity,
                   ev.time, make_timestamp(epoch_ns(ev.time) // 1000) as t_utc, ev.dimensions, ev.source,
                   ev.service_name, ev.trace_id, ev.span_id,
                   ev.ingest_batch, m.name is not null as declared,
                   coalesce(m.period, 'day') as period, coalesce(m.aggregation, 'sum') as aggregation,
                   coalesce(m.unit, ev.unit) as unit_out, coalesce(m.group_by, []::varchar[]) as group_by,
                   case when ev.quantity < 0 then 'invalid_quantity'
                        when m.name is null and $strict then 'undeclared_meter'
                        when ev.time < $now - $max_past or ev.time > $now + $max_future
                            then 'timestamp_out_of_range'
                   end as reason
            from new_events ev left join meters m on m.name = ev.meter
        ),
        select event_id, tenant_id, hash(tenant_id, event_id) as h, meter, quantity, time, t_utc, source,
               service_name, trace_id, span_id, ingest_batch, declared, period, aggregation, unit_out, reason,
               {dims_key} as dimensions_key,
               case when reason is not null then
                   to_json({{'event_id': event_id, 'meter': meter, 'quantity': quantity::varchar,
                             'time': time::varchar, 'dimensions': dimensions, 'source': source}})::varchar
               end as raw
        from e
    """, {**{k: params[k] for k in ("now", "strict", "max_past", "max_future")}, **dims_params})
    # first occurrence per (tenant, event_id) within the run (earliest time, then a fixed
    # tie-break). Grouping on a 64-bit hash of the id finds the candidates cheaply: an id seen
    # more than once always has a hash seen more than once, so every row outside `repeated` is
    # the only delivery of its id; the candidates (true repeats plus rare hash collisions) are
    # then ordered by their exact (tenant_id, event_id). Then drop ids the committed index already
    # holds within the window.
    con.execute("""
        create or replace temp table repeated as
        select h from classified where reason is null group by h having count(*) > 1
    """)
    # Only the rows to drop are materialized (row ids: later copies, and ids already counted);
    # `accepted` stays a view over `classified`, because copying the kept rows (nearly all of
    # them, many strings each) cost more than scanning them again for entries and index.
    con.execute("""
        create or replace temp table dropped as
        select rid from (
            select rowid as rid, * from classified semi join repeated using (h) where reason is null
            qualify row_number() over (partition by tenant_id, event_id
                                       order by time, meter, quantity, source, ingest_batch, service_name,
                                                dimensions_key, trace_id, span_id) > 1)
        union
        select rid from (select rowid as rid, tenant_id, event_id from classified where reason is null)
        semi join (select distinct tenant_id, event_id from hist_index where time >= $now - $window)
            using (tenant_id, event_id)
    """, {k: params[k] for k in ("now", "window")})
    con.execute(f"""
        create or replace temp view accepted as
        select event_id, tenant_id, meter, aggregation, unit_out, time, source, trace_id, span_id,
               case when aggregation = 'count' then 1::decimal(38, 9) else quantity end as quantity,
               {_PERIOD_START.format(p='period', t='t_utc')} as period_start,
               {_PERIOD_START.format(p='period', t='t_utc')} + {_PERIOD_LEN.format(p='period')} as period_end,
               dimensions_key
        from (select rowid as rid, * from classified where reason is null) c
        anti join dropped using (rid)
    """)
    # the (time, event_id) keys of `latest` cost a struct per accepted row: only when a meter needs them
    has_latest = con.execute("select count(*) from meters where aggregation = 'latest'").fetchone()[0] > 0
    latest_aggs = latest_case = ""
    if has_latest:
        latest_aggs = """,
                   arg_max(quantity, (time, event_id)) filter (where aggregation = 'latest') as q_latest,
                   max((time, event_id)) filter (where aggregation = 'latest') as latest_key"""
        latest_case = """                        when 'latest' then case when h.h_latest_key is null or n.latest_key > h.h_latest_key
                                                then n.q_latest else h.h_latest end
"""
    con.execute(f"""
        create or replace temp table entries as
        with new as (
            select tenant_id, meter, period_start, dimensions_key, any_value(period_end) as period_end,
                   any_value(aggregation) as aggregation, min(unit_out) as unit,
                   sum(quantity) as q_sum, count(*) as n,
                   max(quantity) filter (where aggregation = 'max') as q_max{latest_aggs}
            from accepted group by tenant_id, meter, period_start, dimensions_key
        ),
        prev as (
            select tenant_id, meter, period_start, dimensions_key, sum(quantity) as balance,
                   max(revision) as max_rev, arg_max(entry_id, revision) as last_entry
            from (select * replace (make_timestamp(epoch_ns(period_start) // 1000) as period_start) from hist_ledger)
            semi join new using (tenant_id, meter, period_start, dimensions_key)
            group by all
        ),
        prev_ev as (
            select tenant_id, meter, period_start, dimensions_key, max(quantity) as h_max,
                   arg_max(quantity, (time, event_id)) as h_latest, max((time, event_id)) as h_latest_key
            from (select * replace (make_timestamp(epoch_ns(period_start) // 1000) as period_start) from hist_index)
            semi join (select * from new where aggregation in ('max', 'latest'))
                using (tenant_id, meter, period_start, dimensions_key)
            group by all
        ),
        final as (
            select n.tenant_id, n.meter, n.period_start, n.period_end,
                   n.dimensions_key::json::map(varchar, varchar) as dimensions, n.dimensions_key,
                   (case n.aggregation
                        when 'max' then greatest(n.q_max, coalesce(h.h_max, n.q_max))
{latest_case}                        else n.q_sum + coalesce(p.balance, 0)
                    end - coalesce(p.balance, 0))::decimal(38, 9) as quantity,
                   n.unit, n.n as event_count, (coalesce(p.max_rev, 0) + 1)::integer as revision,
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
    """, {"now": now, "now_utc": now.astimezone(dt.timezone.utc).replace(tzinfo=None), "grace": params["grace"],
          "version": pipeline_version, "run_id": run_id})
    con.execute("""
        create or replace temp view accepted_index as
        select a.tenant_id, a.event_id, a.meter, a.period_start, a.dimensions_key, e.entry_id, a.quantity,
               a.time, a.source, a.trace_id, a.span_id, e.ingest_batch
        from accepted a join entries e using (tenant_id, meter, period_start, dimensions_key)
    """)
    entries = con.sql(
        "select * from entries order by tenant_id, meter, period_start, dimensions_key"
    ).to_arrow_table()
    quarantine = con.sql("""
        select 'usage_events' as "table", tenant_id, service_name, reason, 'ledger' as processor,
               case reason
                   when 'undeclared_meter' then 'meter ' || meter || ' has no definition and ledger.strict is on'
                   when 'invalid_quantity' then 'negative quantity ' || quantity::varchar
                   else 'event time ' || strftime(time, '%Y-%m-%dT%H:%M:%SZ') ||
                        ' is outside ledger.max_past_days / ledger.max_future_minutes of the run'
               end as detail,
               raw, time, ingest_batch
        from classified where reason is not null
        order by tenant_id, event_id, time
    """).to_arrow_table()
    # distinct ids = valid rows minus the extra copies, which only candidate rows can be
    counts = dict(zip(
        ("events_in", "valid", "accepted", "candidates", "candidate_ids"),
        con.execute("select (select count(*) from classified), "
                    "(select count(*) from classified where reason is null), "
                    "(select count(*) from accepted), "
                    "count(*), count(distinct (tenant_id, event_id)) "
                    "from classified semi join repeated using (h) where reason is null").fetchone(),
    ))
    counts["distinct"] = counts["valid"] - (counts.pop("candidates") - counts.pop("candidate_ids"))
    counts["duplicates_in_run"] = counts["valid"] - counts["distinct"]
    counts["duplicates_history"] = counts.pop("distinct") - counts["accepted"]
    undeclared = [r[0] for r in con.execute(
        "select distinct meter from classified where not declared order by meter").fetchall()]
    return Computed(schemas.conform("usage_ledger", entries), schemas.conform("quarantine", quarantine),
                    counts, undeclared)
