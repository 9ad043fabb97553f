-- marts: one row per usage event behind a ledger entry (accepted events only; duplicates and
-- quarantined events are not evidence). For derived usage, trace_id/span_id name the telemetry.
-- An event belongs to the entry its run wrote for the event's (tenant, meter, period, dimensions).
create or replace view ledger_evidence as
with accepted as (
    select * from stg_usage_dedup
),
entries as (
    select entry_id, tenant_id, meter, period_start, dimensions_key, period_end, revision, kind, dimensions,
           ingest_batch
    from stg_usage_ledger
    where kind <> 'credit'
),
final as (
    select
        a.tenant_id, a.meter, a.period_start, e.period_end, e.dimensions, a.dimensions_key,
        e.entry_id, e.revision, e.kind, a.event_id, a.source, a.quantity, a.time,
        a.trace_id, a.span_id, a.ingest_batch as run_id
    from accepted a
    join entries e using (tenant_id, meter, period_start, dimensions_key, ingest_batch)
)
select * from final;
