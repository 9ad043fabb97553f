-- marts: one row per (month, tenant, currency): revenue from rated invoice lines, allocated cost,
-- gross margin and margin %. Revenue is 0 for a tenant with cost but no invoice lines (and cost 0
-- for the reverse). Currencies are compared upper-cased; '__platform__' cost is not a tenant's.
-- Needs the view invoice_lines (tenant_id, period_start or period, amount, currency) from tenantry.billing.
create or replace view tenant_margin_monthly as
with cost as (
    select date_trunc('month', day)::date as period_start, tenant_id, upper(currency) as currency,
           sum(cost) as cost
    from tenant_cost_daily
    where tenant_id <> '__platform__'
    group by 1, 2, 3
),
-- invoice_lines names its month either period_start (a timestamp) or period ('2026-11'):
-- union by name fills whichever is missing with null, so the view binds against both shapes
invoice_rows as (
    select * from invoice_lines
    union all by name
    select null::timestamptz as period_start, null::varchar as period where false
),
invoiced as (
    select coalesce(date_trunc('month', period_start)::date,
                    try_strptime(period || '-01', '%Y-%m-%d')::date) as month,
           tenant_id, upper(currency) as currency_code, amount
    from invoice_rows
),
revenue as (
    select month as period_start, tenant_id, currency_code as currency, sum(amount) as revenue
    from invoiced
    group by month, tenant_id, currency_code
),
joined as (
    select coalesce(c.period_start, r.period_start) as period_start,
           coalesce(c.tenant_id, r.tenant_id) as tenant_id,
           coalesce(c.currency, r.currency) as currency,
           coalesce(r.revenue, 0) as revenue,
           coalesce(c.cost, 0) as cost
    from cost c
    full outer join revenue r
        on c.period_start = r.period_start and c.tenant_id = r.tenant_id and c.currency = r.currency
),
final as (
    select period_start, tenant_id, currency,
           revenue::decimal(38, 9) as revenue,
           cost::decimal(38, 9) as cost,
           (revenue - cost)::decimal(38, 9) as gross_margin,
           case when revenue <> 0 then round((revenue - cost)::double / revenue::double * 100, 2) end as margin_pct
    from joined
)
select * from final;
