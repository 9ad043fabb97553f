-- marts: one row per (table, tenant, processor, outcome): what each processor kept, quarantined
-- (outcome quarantined:<reason>), redacted, overflowed or sampled out.
create or replace view processor_stats as
with final as (
    select table_name, tenant_id, processor, outcome, sum(count)::bigint as count
    from stg_processor_stats
    group by all
)
select * from final;
