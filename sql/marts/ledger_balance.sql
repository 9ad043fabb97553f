-- marts: one row per tenant per meter per period per dimensions: the billable balance.
-- quantity is the exact sum of the key's entries (usage revisions and adjustments alike).
create or replace view ledger_balance as
with entries as (
    select * from stg_usage_ledger
),
balances as (
    select
        tenant_id, meter, period_start, period_end, dimensions_key,
        any_value(dimensions) as dimensions,
        sum(quantity)::decimal(38, 9) as quantity,
        arg_max(unit, revision) as unit,
        sum(event_count)::bigint as event_count,
        count(*)::bigint as revisions,
        count(*) filter (where kind = 'adjustment')::bigint as adjustments,
        max(computed_at) as last_computed_at
    from entries
    group by tenant_id, meter, period_start, period_end, dimensions_key
),
final as (
    select tenant_id, meter, period_start, period_end, dimensions, dimensions_key, quantity, unit,
           event_count, revisions, adjustments, last_computed_at
    from balances
)
select * from final
order by tenant_id, meter, period_start, dimensions_key;
