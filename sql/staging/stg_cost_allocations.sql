-- staging: one row per (cost line, share) of the newest allocation of each current cost file.
-- tenant_id null = unallocated (reason says why). Per line_id the amounts add up to the line's amount.
create or replace view stg_cost_allocations as
with allocations as (
    select * from {{ lake('cost_allocations') }}
),
current_files as (
    select distinct ingest_batch as cost_batch from stg_cost_lines
),
final as (
    select a.line_id, a.day, a.service, a.tenant_id, a.amount, a.currency, a.method, a.rule, a.driver,
           a.driver_quantity, a.reason, a.cost_batch, a.allocated_at, a.ingest_batch as allocation_run
    from allocations a
    join current_files using (cost_batch)
    qualify a.allocated_at = max(a.allocated_at) over (partition by a.cost_batch)
)
select * from final;
