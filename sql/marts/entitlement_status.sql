-- marts: one row per period per tenant per plan segment per priced meter: usage against the plan's
-- included units and limit (both prorated to the segment), from the latest bill run's plan snapshot
-- and the live ledger balance (so usage that arrived after `tenantry bill` shows here at once).
create or replace view entitlement_status as
with entitlements as (
    select * from stg_plan_entitlements
    qualify bill_run = first_value(bill_run) over (partition by period order by computed_at desc, bill_run desc)
),
ledger as (
    select tenant_id, meter, period_start, quantity from ledger_balance
),
used as (
    select e.period, e.tenant_id, e.plan, e.meter, e.segment_start, e.segment_end, e.trial, e.included,
           e.limit_quantity, coalesce(sum(l.quantity), 0)::decimal(38, 9) as used
    from entitlements e
    left join ledger l
      on l.tenant_id = e.tenant_id and l.meter = e.meter
     and l.period_start >= e.segment_start and l.period_start < e.segment_end
    group by all
),
final as (
    select
        period, tenant_id, plan, meter, segment_start, segment_end, trial, included, limit_quantity, used,
        greatest(included - used, 0)::decimal(38, 9) as remaining_included,
        greatest(used - included, 0)::decimal(38, 9) as overage,
        used > included as over_included,
        coalesce(used > limit_quantity, false) as over_limit,
        case when included > 0 then round(100 * used / included, 2) end as included_used_pct
    from used
)
select * from final;
