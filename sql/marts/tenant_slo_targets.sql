-- marts: one row per tenant (with traffic) per SLO: the objectives of the latest config a run
-- wrote (tenantry.slo.targets_table), tier-specific rows first, else the `default` ('*') rows.
create or replace view tenant_slo_targets as
with latest as (
    select * from stg_slo_targets
    where computed_at = (select max(computed_at) from stg_slo_targets)
),
tenants as (
    select distinct tenant_id from stg_red_minutely_partials
),
specific as (
    select t.tenant_id, l.tier, l.slo, l.sli, l.objective_pct, l.threshold_ms, l.window_days
    from tenants t join latest l on l.tenant_id = t.tenant_id
),
fallback as (
    select t.tenant_id, l.tier, l.slo, l.sli, l.objective_pct, l.threshold_ms, l.window_days
    from tenants t join latest l on l.tenant_id = '*'
    where t.tenant_id not in (select tenant_id from specific)
),
final as (
    select * from specific
    union all
    select * from fallback
)
select * from final;
