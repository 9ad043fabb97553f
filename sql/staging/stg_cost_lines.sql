-- staging: one row per cost line of the newest ingest of each source (a file path or s3:// key).
-- A re-delivered (restated) export at the same source supersedes the older ingest, never adds to it.
create or replace view stg_cost_lines as
with lines as (
    select * from {{ lake('cost_lines') }}
),
final as (
    select line_id, source_key, source_format, charge_period_start, charge_period_end, day, service,
           category, resource_id, tenant_tag, tags, amount, currency, ingested_at, ingest_batch
    from lines
    qualify ingested_at = max(ingested_at) over (partition by source_key)
)
select * from final;
