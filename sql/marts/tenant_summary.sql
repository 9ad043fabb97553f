-- marts: one row per tenant: the headline figures the demo and the overview dashboard show.
create or replace view tenant_summary as
with sre as (
    select tenant_id, sum(requests) as requests, sum(errors) as errors
    from tenant_sre_hourly
    group by all
),
lat as (
    select tenant_id, max(p95_ms) as worst_hourly_p95_ms
    from tenant_sre_hourly
    group by all
),
usage as (
    select tenant_id, count(distinct meter) filter (where meter <> 'requests') as app_meters,
           sum(event_count) filter (where meter <> 'requests') as usage_events
    from tenant_usage_daily
    group by all
),
final as (
    select s.tenant_id, s.requests, s.errors,
           case when s.requests > 0 then s.errors / s.requests end as error_rate,
           l.worst_hourly_p95_ms,
           coalesce(u.app_meters, 0) as app_meters, coalesce(u.usage_events, 0) as usage_events
    from sre s
    left join lat l using (tenant_id)
    left join usage u using (tenant_id)
)
select * from final;
