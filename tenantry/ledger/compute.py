"""The ledger rules of one run, in DuckDB over Arrow: classify and deduplicate usage events.

Inputs (relations on the connection the caller prepares):

- ``new_events``: the run's usage_events rows (any number, any order, duplicates included);
- ``meters``: one row per declared meter (name, unit, aggregation, period, group_by);
- ``hist_ledger`` / ``hist_index``: the committed ``usage_ledger`` / ``usage_dedup`` rows.

Output (:class:`Accepted`): the run's valid events shaped as dedup-index rows, which of them are
counted, quarantine rows and counts. :mod:`tenantry.ledger.entries` aggregates the counted ones
into entries; :mod:`tenantry.ledger.run` writes them and the index parts.

The rules, in order: an event is quarantined when its quantity is negative, its meter is
undeclared under ``strict``, or its time is outside [now - max_past_days, now +
max_future_minutes]; of the rest, the first occurrence of each (tenant_id, event_id) in the run
is kept (earliest time, then a fixed tie-break) unless the committed index already holds that id
within the dedup window.

How it stays fast (millions of events per second): the Parquet input is read in one full pass
that exports the valid events to Arrow once, already shaped as index rows (period, canonical
dimensions key) and with a 64-bit hash of (tenant_id, event_id); nothing per event is copied
into a DuckDB table. Duplicates are found on the hash: an id delivered more than once always has
a hash seen more than once, so an event whose hash is seen once is the only delivery of its id,
and only the few events sharing a hash (true repeats plus rare collisions) are compared on their
exact (tenant_id, event_id). The hash only narrows the search; every decision is taken on the
exact ids, so a collision can never drop or double an event. The result is a mask over the
Arrow rows, not a second copy of them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import duckdb
import numpy as np
import pyarrow as pa

from tenantry import schemas
from tenantry.ledger.settings import LedgerSettings

_PERIOD_START = (
    "case {p} when 'hour' then date_trunc('hour', {t}) when 'month' then date_trunc('month', {t}) "
    "else date_trunc('day', {t}) end"
)

METERS_SCHEMA = pa.schema([
    ("name", pa.string()), ("unit", pa.string()), ("aggregation", pa.string()), ("period", pa.string()),
    ("group_by", pa.list_(pa.string())),
])

#: the columns of an accepted event: USAGE_DEDUP's but the run id (``ingest_batch``, added as the
#: parts are written), plus ``unit`` for the entries of unitless meters
_INDEX_COLUMNS = ["tenant_id", "event_id", "meter", "period_start", "dimensions_key", "quantity", "time", "source",
                  "trace_id", "span_id", "unit"]


#: the 64-bit hash that narrows the search for repeated ids (any function of the id is correct;
#: a worse one only makes more events compare exactly: the tests swap in a colliding one)
ID_HASH = "hash(tenant_id, event_id)"


@dataclasses.dataclass
class Accepted:
    """The run's valid events (``events``, in :data:`_INDEX_COLUMNS`), which of them the ledger
    counts (``keep``; None when all), its quarantine rows and counts.

    ``events_in = accepted + duplicates_in_run + duplicates_history + quarantined``.
    """

    events: pa.Table
    keep: pa.BooleanArray | None
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


def index_part(events: pa.Table, keep: pa.BooleanArray | None, run_id: str) -> pa.Table:
    """USAGE_DEDUP rows of the kept ``events`` (a slice of ``Accepted.events`` and of its ``keep``)."""
    kept = events if keep is None else events.filter(keep)
    return schemas.conform("usage_dedup", kept.append_column("ingest_batch", pa.repeat(run_id, kept.num_rows)))


def _dims_key_sql(con: duckdb.DuckDBPyConnection) -> tuple[str, dict]:
    """SQL for ``dimensions_key`` (over columns ``gb`` and ``dimensions``) and its parameters;
    ``_meters`` must be prepared (:func:`prepare_meters`).

    The key is the canonical JSON of the kept dimensions: ``{"k1":"v1","k2":null}`` with the
    declared names present in the map, sorted by name (UTF-8 byte order, as DuckDB sorts), values
    JSON-escaped by DuckDB's ``to_json``; ``{}`` when none is kept. Each distinct ``group_by`` list
    gets a number (``_meters.gb``) and one branch: a direct lookup per declared name, with the
    name's JSON computed once here rather than per event. Names and their JSON go in as
    parameters, so any meter or dimension name is safe.
    """
    lists = con.execute("select gb, any_value(group_by) from _meters where gb >= 0 group by gb order by gb").fetchall()
    params: dict = {}
    branches = []
    for i, names in lists:
        pieces = []
        for j, name in enumerate(sorted(set(names), key=lambda n: n.encode())):
            k = f"gb_{i}_{j}"
            params[k] = name
            params[k + "_json"] = con.execute("select to_json($1)::varchar", [name]).fetchall()[0][0]
            # concat() rather than ||: one allocation per key instead of one per piece
            value = f"${k}_json, ':', coalesce(to_json(dimensions[${k}])::varchar, 'null')"
            pieces.append((f"map_contains(dimensions, ${k})", value))
        if len(pieces) == 1:  # the common case, without concat_ws
            (present, value), = pieces
            branches.append(f"when {i} then case when {present} then concat('{{', {value}, '}}') else '{{}}' end")
        else:
            parts = ", ".join(f"case when {p} then concat({v}) end" for p, v in pieces)
            branches.append(f"when {i} then '{{' || concat_ws(',', {parts}) || '}}'")
    if not branches:
        return "'{}'", params
    return f"case gb {' '.join(branches)} else '{{}}' end", params


def prepare_meters(con: duckdb.DuckDBPyConnection) -> None:
    # `_meters`: `meters` with the number of its group_by list (-1 for none), compared per event
    # as an integer instead of as a list
    con.execute("""
        create or replace temp table _meters as
        select m.*, coalesce(l.gb, -1)::integer as gb
        from meters m left join (
            select group_by, (row_number() over (order by group_by) - 1)::integer as gb
            from (select distinct group_by from meters where len(group_by) > 0)
        ) l using (group_by)
    """)


def _classified() -> str:
    """The events joined to their meter, with the quarantine reason (null when valid)."""
    return """
        select ev.event_id, ev.tenant_id, ev.meter, ev.quantity::decimal(38, 9) as quantity, ev.time,
               ev.dimensions, ev.source, ev.service_name, ev.trace_id, ev.span_id, ev.ingest_batch, ev.unit,
               m.name is not null as declared, coalesce(m.period, 'day') as period,
               coalesce(m.aggregation, 'sum') as aggregation, coalesce(m.gb, -1) as gb,
               case when ev.quantity < 0 then 'invalid_quantity'
                    when m.name is null and $strict then 'undeclared_meter'
                    when ev.time < $now - $max_past or ev.time > $now + $max_future then 'timestamp_out_of_range'
               end as reason
        from new_events ev left join _meters m on m.name = ev.meter
    """


def deduplicate(con: duckdb.DuckDBPyConnection, st: LedgerSettings, now: dt.datetime) -> Accepted:
    """Classify the run's events and mark the first delivery of each id not already counted."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    con.execute("set TimeZone = 'UTC'")
    prepare_meters(con)
    dims_key, dims_params = _dims_key_sql(con)
    cls = {"now": now, "strict": st.strict, "max_past": dt.timedelta(days=st.max_past_days),
           "max_future": dt.timedelta(minutes=st.max_future_minutes)}
    # the one full pass over the events: every valid event as the index keeps it (`count` meters
    # count 1 per event), with the 64-bit hash of its id
    events = con.sql(f"""
        select tenant_id, event_id, meter,
               {_PERIOD_START.format(p='period', t='make_timestamp(epoch_ns(time) // 1000)')} as period_start,
               {dims_key} as dimensions_key,
               case when aggregation = 'count' then 1::decimal(38, 9) else quantity end as quantity,
               time, source, trace_id, span_id, unit, {ID_HASH} as h
        from ({_classified()}) where reason is null
    """, params={**cls, **dims_params}).to_arrow_table()
    events = events.append_column("i", pa.array(np.arange(events.num_rows, dtype=np.int64)))
    con.register("_events", events)
    try:
        drop = _dropped(con, events, st, now)
    finally:
        con.unregister("_events")
    quarantine = con.sql(f"""
        select 'usage_events' as "table", tenant_id, service_name, reason, 'ledger' as processor,
               case reason
                   when 'undeclared_meter' then 'meter ' || meter || ' has no definition and ledger.strict is on'
                   when 'invalid_quantity' then 'negative quantity ' || quantity::varchar
                   else 'event time ' || strftime(time, '%Y-%m-%dT%H:%M:%SZ') ||
                        ' is outside ledger.max_past_days / ledger.max_future_minutes of the run'
               end as detail,
               to_json({{'event_id': event_id, 'meter': meter, 'quantity': quantity::varchar,
                         'time': time::varchar, 'dimensions': dimensions, 'source': source}})::varchar as raw,
               time, ingest_batch
        from ({_classified()}) where reason is not null
        order by tenant_id, event_id, time
    """, params=cls).to_arrow_table()
    events_in = con.execute("select count(*) from new_events").fetchall()[0][0]
    undeclared = [r[0] for r in con.execute(
        "select distinct meter from new_events anti join _meters m on m.name = meter order by meter").fetchall()]
    keep = None
    if drop["later_copy"].size or drop["counted"].size:
        mask = np.ones(events.num_rows, dtype=bool)
        mask[drop["later_copy"]] = False
        mask[drop["counted"]] = False
        keep = pa.array(mask)
    valid = events.num_rows
    accepted = valid - drop["later_copy"].size - drop["counted"].size
    counts = {"events_in": events_in, "valid": valid, "accepted": accepted,
              "duplicates_in_run": int(drop["later_copy"].size), "duplicates_history": int(drop["counted"].size)}
    return Accepted(events.select(_INDEX_COLUMNS), keep, schemas.conform("quarantine", quarantine), counts,
                    undeclared)


def _dropped(con: duckdb.DuckDBPyConnection, events: pa.Table, st: LedgerSettings,
             now: dt.datetime) -> dict[str, np.ndarray]:
    """Row numbers (``i``) of ``events`` (registered as ``_events``) to drop: ``later_copy``, every
    delivery of an id after its first in this run; ``counted``, first deliveries of ids the
    committed index holds within the window."""
    # hashes seen more than once: only events carrying one can be a repeated delivery. A sort of
    # the plain 64-bit integers (vectorized in numpy) finds them for a fraction of what a hash
    # table over millions of keys costs
    hashes = np.sort(events.column("h").to_numpy())
    repeated = np.unique(hashes[1:][hashes[1:] == hashes[:-1]])
    con.register("_repeated", pa.table({"h": pa.array(repeated, pa.uint64())}))
    shared = con.execute("select i from _events semi join _repeated using (h) order by i").fetchnumpy()["i"]
    # the first delivery of each exact (tenant_id, event_id) among those few: earliest time, then
    # a tie-break over every other column an index row or an entry takes from the event, so when
    # two deliveries tie, they would write the same row and it does not matter which one is kept
    con.register("_shared", events.take(pa.array(shared, pa.int64())))
    try:
        con.execute("""
            create or replace temp table _firsts as
            select arg_min(i, (time, meter, quantity, source, dimensions_key, trace_id, span_id, unit)) as i,
                   tenant_id, event_id
            from _shared group by tenant_id, event_id
        """)
        later = con.execute("select i from _shared anti join _firsts using (i) order by i").fetchnumpy()["i"]
    finally:
        con.unregister("_shared")
    # ids counted by an earlier run: checked on first deliveries only, so each id is one duplicate
    counted = con.execute("""
        with firsts as (
            select i, tenant_id, event_id from _events anti join _repeated using (h)
            union all
            select i, tenant_id, event_id from _firsts
        )
        select i from firsts semi join (select tenant_id, event_id from hist_index where time >= $now - $window)
            using (tenant_id, event_id)
        order by i
    """, {"now": now, "window": dt.timedelta(days=st.dedup_window_days)}).fetchnumpy()["i"]
    con.unregister("_repeated")
    return {"later_copy": np.asarray(later, dtype=np.int64), "counted": np.asarray(counted, dtype=np.int64)}
