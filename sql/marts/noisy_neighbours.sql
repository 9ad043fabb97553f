-- marts: one row per (hour, shared service, noisy tenant) flagged: the tenant's share of the
-- service's requests rose (>= 2x its median share over the previous 24 hours of that service, by
-- >= 20 points, to >= 25%) while the OTHER tenants' mean latency on the service rose >= 1.5x their
-- median over the same hours. Needs >= 3 earlier hours of the service and >= 2 tenants on it.
-- Fleet-wide (operator) view: the noisy tenant is `noisy_tenant_id`, not `tenant_id`, because the
-- row carries other tenants' aggregate latency, which no tenant-scoped query may see.
create or replace view noisy_neighbours as
with tenant_hours as (
    select hour, service_name, tenant_id, sum(requests) as requests, sum(duration_sum_ms) as duration_sum_ms
    from stg_sre_hourly_partials
    group by all
),
service_hours as (
    select hour, service_name, sum(requests) as total_requests, sum(duration_sum_ms) as total_duration_ms,
           count(*) as tenants
    from tenant_hours
    group by all
),
current as (
    select t.hour, t.service_name, t.tenant_id, t.requests, s.total_requests, s.tenants,
           t.requests / s.total_requests as share,
           (s.total_duration_ms - t.duration_sum_ms) / nullif(s.total_requests - t.requests, 0) as others_mean_ms
    from tenant_hours t join service_hours s using (hour, service_name)
    where s.total_requests > 0
),
candidates as (
    select * from current
    where tenants >= 2 and share >= 0.25 and others_mean_ms is not null
),
history as (
    select c.hour, c.service_name, c.tenant_id,
           coalesce(p.requests, 0) / s.total_requests as past_share,
           (s.total_duration_ms - coalesce(p.duration_sum_ms, 0))
               / nullif(s.total_requests - coalesce(p.requests, 0), 0) as past_others_mean_ms
    from candidates c
    join service_hours s on s.service_name = c.service_name
                         and s.hour >= c.hour - interval 24 hours and s.hour < c.hour
                         and s.total_requests > 0
    left join tenant_hours p on p.service_name = s.service_name and p.hour = s.hour and p.tenant_id = c.tenant_id
),
baseline as (
    select hour, service_name, tenant_id, count(*) as baseline_hours,
           median(past_share) as baseline_share, median(past_others_mean_ms) as baseline_others_mean_ms
    from history
    group by all
),
final as (
    select c.hour, c.service_name, c.tenant_id as noisy_tenant_id, c.requests, c.total_requests,
           c.share, b.baseline_share, c.others_mean_ms, b.baseline_others_mean_ms,
           c.others_mean_ms / b.baseline_others_mean_ms as others_latency_ratio, b.baseline_hours
    from candidates c join baseline b using (hour, service_name, tenant_id)
    where b.baseline_hours >= 3
      and c.share >= 2 * b.baseline_share and c.share - b.baseline_share >= 0.20
      and b.baseline_others_mean_ms > 0 and c.others_mean_ms >= 1.5 * b.baseline_others_mean_ms
)
select * from final;
