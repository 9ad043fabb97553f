-- marts: one row per block (see tenant_service_sre_rollup) per tenant, over all its services:
-- requests and errors summed, worst_p95_ms and worst_p99_ms the highest hourly quantile of any
-- service, hours the hourly (service) rows. Fleet charts rank and plot tenants from here, so their
-- cost does not grow with the number of services.
create or replace view tenant_sre_rollup as
with final as (
    select grain, period_start, tenant_id, sum(requests) as requests, sum(errors) as errors,
           max(worst_p95_ms) as worst_p95_ms, max(worst_p99_ms) as worst_p99_ms, sum(hours)::bigint as hours
    from tenant_service_sre_rollup
    group by all
)
select * from final;
