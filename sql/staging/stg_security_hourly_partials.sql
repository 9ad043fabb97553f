-- staging: security counters, one row per (hour, tenant, service) per ingest batch.
create or replace view stg_security_hourly_partials as
select hour, tenant_id, service_name, requests, errors, auth_failures, authz_denials, rate_limited,
       cross_tenant_access, tenant_mismatch, ingest_batch
from {{ lake('security_hourly_partials') }};
