-- marts: one row per finding of the latest `tenantry reconcile` run of each period (tenant, kind,
-- meter, provider). amount_at_risk is priced with the tenant's plan; null where no plan applies.
create or replace view revenue_leakage as
with findings as (
    select * from stg_leakage_findings
    qualify reconcile_run = first_value(reconcile_run)
        over (partition by period order by computed_at desc, reconcile_run desc)
),
final as (
    select
        period, tenant_id, kind, meter, provider, expected_quantity, actual_quantity, gap_quantity,
        amount_at_risk, currency, detail, computed_at, reconcile_run
    from findings
)
select * from final;
