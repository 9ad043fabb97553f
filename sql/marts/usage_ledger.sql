-- marts: one row per ledger entry (every revision and adjustment, in order); unique on entry_id.
-- An entry's quantity is a delta: the balance of a key is the sum of its entries (ledger_balance).
create or replace view usage_ledger as
with entries as (
    select * from stg_usage_ledger
),
final as (
    select
        entry_id, tenant_id, meter, period_start, period_end, dimensions, dimensions_key,
        quantity, unit, event_count, revision, kind, supersedes, computed_at, pipeline_version,
        ingest_batch as run_id
    from entries
)
select * from final
order by tenant_id, meter, period_start, dimensions_key, revision;
