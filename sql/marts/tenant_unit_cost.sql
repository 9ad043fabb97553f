-- marts: one row per (month, tenant, meter, currency): allocated cost per unit of each usage meter
-- (meter 'requests' = cost per request). Platform-kept and unallocated cost are not in it.
create or replace view tenant_unit_cost as
with cost as (
    select date_trunc('month', day)::date as period_start, tenant_id, currency, sum(cost) as cost
    from tenant_cost_daily
    where tenant_id <> '__platform__'
    group by 1, 2, 3
),
usage_by_month as (
    select date_trunc('month', u.day)::date as month, u.tenant_id, u.meter, u.unit, u.quantity
    from tenant_usage_daily u
),
usage as (
    select month as period_start, tenant_id, meter, any_value(unit) as unit, sum(quantity) as quantity
    from usage_by_month
    group by month, tenant_id, meter
),
final as (
    select c.period_start, c.tenant_id, u.meter, u.unit, u.quantity,
           c.cost::decimal(38, 9) as cost, c.currency,
           case when u.quantity > 0 then c.cost::double / u.quantity::double end as cost_per_unit
    from cost c
    join usage u using (period_start, tenant_id)
)
select * from final;
