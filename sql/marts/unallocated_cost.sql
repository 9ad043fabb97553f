-- marts: one row per (day, service, category, currency, reason, rule, driver, tenant tag): cost that
-- could not be attributed to a tenant, and why (tenantry.schemas.CostReason). Fleet-wide: no tenant_id.
create or replace view unallocated_cost as
with unallocated as (
    select a.day, a.service, l.category, a.currency, a.reason, a.rule, a.driver, l.tenant_tag, a.amount
    from stg_cost_allocations a
    join stg_cost_lines l using (line_id)
    where a.tenant_id is null
),
final as (
    select day, service, category, currency, reason, rule, driver, tenant_tag,
           sum(amount)::decimal(38, 9) as cost, count(*) as cost_lines
    from unallocated
    group by all
)
select * from final;
