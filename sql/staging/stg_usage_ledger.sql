-- staging: one row per ledger entry of a committed run (append-only; entries are never updated).
create or replace view stg_usage_ledger as
select
    entry_id, tenant_id, meter, period_start, period_end, dimensions, dimensions_key,
    quantity, unit, event_count, revision, kind, supersedes, computed_at, pipeline_version,
    ingest_batch
from {{ lake('usage_ledger') }};
