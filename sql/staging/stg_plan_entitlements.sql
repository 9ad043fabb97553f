-- staging: one row per (period, tenant, plan segment, meter) per bill run: what the plan grants.
create or replace view stg_plan_entitlements as
select
    period, tenant_id, plan, meter, segment_start, segment_end, trial, included, "limit" as limit_quantity,
    computed_at, ingest_batch as bill_run
from {{ lake('plan_entitlements') }};
