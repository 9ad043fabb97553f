-- marts: tenant_usage_daily at three grains, for dashboards over long ranges (see
-- rollup_range.sql): one row per block (grain: day, ISO week, calendar month; period_start is its
-- first day) per tenant per meter, quantity and event_count summed exactly.
create or replace view tenant_usage_rollup as
with daily as (
    select day as period_start, tenant_id, meter, quantity, unit, event_count
    from tenant_usage_daily
),
weeks as (
    select date_trunc('week', period_start)::date as period_start, tenant_id, meter,
           sum(quantity)::decimal(38, 9) as quantity, any_value(unit) as unit,
           sum(event_count)::bigint as event_count
    from daily
    group by all
),
months as (
    select date_trunc('month', period_start)::date as period_start, tenant_id, meter,
           sum(quantity)::decimal(38, 9) as quantity, any_value(unit) as unit,
           sum(event_count)::bigint as event_count
    from daily
    group by all
),
final as (
    select 'day' as grain, * from daily
    union all
    select 'week' as grain, * from weeks
    union all
    select 'month' as grain, * from months
)
select * from final;
