-- staging: one row per usage event the ledger accepted (its dedup index and evidence). The entry
-- an event is counted in is its run's entry of the same (tenant_id, meter, period_start,
-- dimensions_key): ingest_batch names the run, and a run writes one entry per key.
create or replace view stg_usage_dedup as
select
    tenant_id, event_id, meter, period_start, dimensions_key, quantity, time,
    source, trace_id, span_id, ingest_batch
from {{ lake('usage_dedup') }};
