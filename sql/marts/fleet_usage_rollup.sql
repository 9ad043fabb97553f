-- marts: fleet-wide usage per block (see tenant_usage_rollup): one row per grain per period_start
-- per meter, quantity and event_count summed exactly over every tenant. No tenant_id: operator-only.
create or replace view fleet_usage_rollup as
with final as (
    select grain, period_start, meter, sum(quantity)::decimal(38, 9) as quantity,
           sum(event_count)::bigint as event_count
    from tenant_usage_rollup
    group by all
)
select * from final;
