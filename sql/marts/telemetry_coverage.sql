-- marts: one row per day per signal: how much telemetry carried tenant context.
create or replace view telemetry_coverage as
with totals as (
    select day, signal, sum(total) as total, sum(unattributed) as unattributed
    from stg_coverage_partials
    group by all
),
final as (
    select day, signal, total, total - unattributed as attributed, unattributed,
           case when total > 0 then (total - unattributed)::double / total end as coverage_ratio
    from totals
)
select * from final;
