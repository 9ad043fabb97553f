-- marts: one row per invoice line draft (tenant, period, plan segment, meter, line type, bill run).
-- Lines are never edited: a re-rating appends the difference (kind = 'adjustment'), so a tenant's
-- invoice for a period is sum(amount) over its lines, and each line's key sums to the latest rating.
create or replace view invoice_lines as
with lines as (
    select * from stg_invoice_lines
),
final as (
    select
        period, strptime(period || '-01', '%Y-%m-%d')::date as period_start, tenant_id, plan, currency, segment_start, segment_end, trial, meter, line_type, price_model,
        quantity, included, billable_quantity, unit_price, tiers_json, amount, kind, rated_at, bill_run, line_id
    from lines
)
select * from final;
