-- marts: one row per (day, tenant, service, currency, method, driver): cost allocated to a tenant.
-- tenant_id '__platform__' is shared cost kept by the platform; unallocated cost is in unallocated_cost.
-- driver_quantity: the tenant's measured driver in the charge period (the weight of its share): the
-- driver's quantity for proportional, 1 for even, the percentage for fixed, allocated cost for spread.
create or replace view tenant_cost_daily as
with allocated as (
    select * from stg_cost_allocations where tenant_id is not null
),
final as (
    select day, tenant_id, service,
           sum(amount)::decimal(38, 9) as cost,
           currency, method, driver,
           max(driver_quantity) as driver_quantity,
           count(*) as cost_lines
    from allocated
    group by day, tenant_id, service, currency, method, driver
)
select * from final;
