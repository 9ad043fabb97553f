-- marts: per block (see tenant_service_sre_rollup), the 25 tenants with the worst hourly p95 (over
-- their services): one row per grain per period_start per rank (1 = worst; ties by tenant id). A top-N
-- latency chart (N < 25) finds "the other tenants'" worst p95 of a block here, in the first entry
-- not in its top N, without reading every tenant's rows. The tenant is worst_tenant_id, not
-- tenant_id: a rank compares tenants, so the view is operator-only and never in tenant scope.
create or replace view fleet_sre_worst_p95 as
with ranked as (
    select grain, period_start, tenant_id, worst_p95_ms,
           row_number() over (partition by grain, period_start
                              order by worst_p95_ms desc nulls last, tenant_id) as rank
    from tenant_sre_rollup
    qualify rank <= 25
),
final as (
    select grain, period_start, rank, tenant_id as worst_tenant_id, worst_p95_ms from ranked
)
select * from final;
