-- marts: one row per day per tenant per meter.
-- Read from the usage ledger, so these figures are the ones billing sees (deduplicated by event id,
-- late events included as revisions and adjustments, quarantined events excluded). Meters with
-- periods longer than a day (monthly) cannot be split into days and are left out here; see
-- ledger_balance. `requests` comes from server spans (counted before any sampling) unless a
-- meter named `requests` is configured, in which case the ledger's figure is used.
create or replace view tenant_usage_daily as
with ledger_days as (
    select period_start::date as day, tenant_id, meter,
           sum(quantity)::decimal(38, 9) as quantity, any_value(unit) as unit,
           sum(event_count)::bigint as event_count
    from ledger_balance
    where period_end::timestamptz - period_start::timestamptz <= interval 1 day
    group by all
),
span_requests as (
    select date_trunc('day', hour)::date as day, tenant_id, 'requests' as meter,
           sum(requests)::decimal(38, 9) as quantity, 'requests' as unit,
           sum(requests)::bigint as event_count
    from stg_sre_hourly_partials
    where not exists (select 1 from ledger_balance where meter = 'requests')
    group by all
),
final as (
    select * from ledger_days
    union all by name
    select * from span_requests
)
select day, tenant_id, meter, quantity, unit, event_count from final;
