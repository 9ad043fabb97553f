-- staging: SLO objectives as each run resolved them from tenantry.yaml, one row per (tenant or '*', slo) per run.
create or replace view stg_slo_targets as
select tenant_id, tier, slo, sli, objective_pct, threshold_ms, window_days, computed_at, ingest_batch
from {{ lake('slo_targets') }};
