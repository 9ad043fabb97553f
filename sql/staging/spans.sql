-- staging: one row per span (committed lake files only). Renames and casts, nothing else.
create or replace view spans as
select
    tenant_id, tenant_tier, user_id, service_name,
    trace_id, span_id, parent_span_id, name, kind, status_code, status_message,
    start_time, end_time, duration_ms, attributes, resource_attributes, scope_name,
    sample_weight, ingest_batch
from {{ lake('spans') }};
