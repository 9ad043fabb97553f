-- staging: SRE partial aggregates, one row per (hour, tenant, service) per ingest batch.
create or replace view stg_sre_hourly_partials as
select hour, tenant_id, service_name, requests, errors, duration_sum_ms, ingest_batch
from {{ lake('sre_hourly_partials') }};
