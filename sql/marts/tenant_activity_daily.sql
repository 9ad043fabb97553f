-- marts: one row per day per tenant: distinct end users seen (user.id on spans and log records)
-- and requests. Users are counted from stored telemetry, so where spans are sampled for storage
-- the figure is a lower bound; requests come from the unsampled RED partials.
create or replace view tenant_activity_daily as
with users as (
    select start_time::date as day, tenant_id, user_id from spans where user_id is not null
    union
    select time::date as day, tenant_id, user_id from logs where user_id is not null
),
active as (
    select day, tenant_id, count(distinct user_id) as active_users
    from users
    group by all
),
requests as (
    select day, tenant_id, sum(requests) as requests
    from tenant_red_daily
    group by all
),
final as (
    select coalesce(a.day, r.day) as day,
           coalesce(a.tenant_id, r.tenant_id) as tenant_id,
           coalesce(a.active_users, 0)::bigint as active_users,
           coalesce(r.requests, 0)::double as requests
    from active a
    full outer join requests r on a.day = r.day and a.tenant_id = r.tenant_id
)
select * from final;
