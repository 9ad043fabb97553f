-- marts: tenant_sre_hourly at four grains, for dashboards over long ranges (see rollup_range.sql):
-- one row per block (grain: hour, day, ISO week, calendar month; starting at period_start, UTC)
-- per tenant per service (tenant_sre_rollup sums the services). requests and errors are summed over the block's hours; worst_p95_ms and
-- worst_p99_ms are the highest hourly quantile in the block (each hour's from its merged sketch, as
-- in tenant_sre_hourly); hours counts the hourly rows the block holds.
create or replace view tenant_service_sre_rollup as
with hourly as (
    select hour::timestamptz as period_start, tenant_id, service_name, requests, errors,
           p95_ms as worst_p95_ms, p99_ms as worst_p99_ms, 1::bigint as hours
    from tenant_sre_hourly
),
blocks as (
    -- one aggregate for every coarser grain: each hourly row counted once per grain
    select g.grain, date_trunc(g.grain, h.period_start) as period_start, h.tenant_id, h.service_name,
           sum(h.requests) as requests, sum(h.errors) as errors, max(h.worst_p95_ms) as worst_p95_ms,
           max(h.worst_p99_ms) as worst_p99_ms, sum(h.hours)::bigint as hours
    from hourly h, (values ('day'), ('week'), ('month')) as g(grain)
    group by all
),
final as (
    select 'hour' as grain, * from hourly
    union all
    select * from blocks
)
select * from final;
