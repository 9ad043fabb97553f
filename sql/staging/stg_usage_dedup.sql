-- staging: one row per usage event the ledger accepted (its dedup index and evidence).
create or replace view stg_usage_dedup as
select
    tenant_id, event_id, meter, period_start, dimensions_key, entry_id, quantity, time,
    source, trace_id, span_id, ingest_batch
from {{ lake('usage_dedup') }};
