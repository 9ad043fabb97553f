-- marts: tenant_usage_daily at three grains, for dashboards over long ranges (see
-- rollup_range.sql): one row per block (grain: day, ISO week, calendar month; period_start is its
-- first day) per tenant per meter, quantity and event_count summed exactly.
create or replace view tenant_usage_rollup as
with daily as (
    select day as period_start, tenant_id, meter, quantity, unit, event_count
    from tenant_usage_daily
),
blocks as (
    -- one aggregate for both coarser grains: each daily row counted once per grain
    select g.grain, date_trunc(g.grain, d.period_start)::date as period_start, d.tenant_id, d.meter,
           sum(d.quantity)::decimal(38, 9) as quantity, any_value(d.unit) as unit,
           sum(d.event_count)::bigint as event_count
    from daily d, (values ('week'), ('month')) as g(grain)
    group by all
),
final as (
    select 'day' as grain, * from daily
    union all
    select * from blocks
)
select * from final;
