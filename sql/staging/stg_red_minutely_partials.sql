-- staging: RED partials, one row per (minute, tenant, service, operation) per ingest batch.
create or replace view stg_red_minutely_partials as
select minute, tenant_id, service_name, operation, requests, errors, duration_sum_ms,
       slow_over_50ms, slow_over_100ms, slow_over_250ms, slow_over_500ms, slow_over_1000ms,
       slow_over_2500ms, slow_over_5000ms, ingest_batch
from {{ lake('red_minutely_partials') }};
