-- marts: fleet-wide SRE totals per block (see tenant_service_sre_rollup): one row per grain per
-- period_start, summed over every tenant and service; tenant_hours counts the hourly
-- (tenant, service) rows summed. No tenant_id: operator-only, never in tenant scope. A top-N chart
-- takes "the other tenants" as these totals minus its top N.
create or replace view fleet_sre_rollup as
with final as (
    select grain, period_start, sum(requests) as requests, sum(errors) as errors,
           sum(hours)::bigint as tenant_hours
    from tenant_sre_rollup
    group by all
)
select * from final;
