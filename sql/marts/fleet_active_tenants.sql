-- marts: which tenants had usage in each block (see tenant_usage_rollup), as bitmaps, so distinct
-- tenants over any range and period are exact without reading every tenant's rows: one row per
-- grain per period_start per tenant_chunk. Tenants are numbered in id order, 65,536 to a chunk;
-- bit n of active_tenants is set when the chunk's tenant n had a day with quantity > 0 in the block.
-- Distinct tenants over several blocks: sum over chunks of bit_count(bit_or(active_tenants)).
-- No tenant_id: operator-only.
create or replace view fleet_active_tenants as
with numbered as (
    select tenant_id, (row_number() over (order by tenant_id) - 1)::bigint as n
    from (select distinct tenant_id from tenant_usage_rollup where grain = 'day')
),
active_days as (
    select distinct u.period_start, k.n
    from tenant_usage_rollup u join numbered k using (tenant_id)
    where u.grain = 'day' and u.quantity > 0
),
blocks as (
    select 'day' as grain, period_start, n from active_days
    union all
    select 'week' as grain, date_trunc('week', period_start)::date, n from active_days
    union all
    select 'month' as grain, date_trunc('month', period_start)::date, n from active_days
),
final as (
    select grain, period_start, n // 65536 as tenant_chunk,
           bitstring_agg(n % 65536, 0, 65535) as active_tenants
    from blocks
    group by grain, period_start, n // 65536
)
select * from final;
