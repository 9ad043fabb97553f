-- marts: one row per day per tenant per meter.
-- `requests` is derived from server spans (counted before any sampling); every other meter is
-- what apps reported with record_usage, each event_id counted once per tenant.
create or replace view tenant_usage_daily as
with requests as (
    select date_trunc('day', hour)::date as day, tenant_id, 'requests' as meter,
           sum(requests)::decimal(38, 9) as quantity, 'requests' as unit,
           sum(requests)::bigint as event_count
    from stg_sre_hourly_partials
    group by all
),
events as (
    select * from usage_events
    qualify row_number() over (partition by tenant_id, event_id order by time, ingest_batch) = 1
),
app_usage as (
    select time::date as day, tenant_id, meter,
           sum(quantity)::decimal(38, 9) as quantity, any_value(unit) as unit,
           count(*) as event_count
    from events
    group by day, tenant_id, meter
),
final as (
    select * from requests
    union all by name
    select * from app_usage
)
select day, tenant_id, meter, quantity, unit, event_count from final;
