-- staging: one row per revenue-leakage finding per reconcile run.
create or replace view stg_leakage_findings as
select
    period, tenant_id, meter, provider, kind, expected_quantity, actual_quantity, gap_quantity, amount_at_risk,
    currency, detail, computed_at, ingest_batch as reconcile_run
from {{ lake('leakage_findings') }};
