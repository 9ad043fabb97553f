-- staging: security evidence, one row per flagged span (auth kinds: a few per hour and tenant).
create or replace view stg_security_events as
select time, tenant_id, service_name, kind, trace_id, span_id, detail, ingest_batch
from {{ lake('security_events') }};
