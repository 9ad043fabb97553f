-- staging: one row per log record (usage events are in usage_events, not here).
create or replace view logs as
select
    tenant_id, tenant_tier, user_id, service_name, time, observed_time,
    severity_number, severity_text, body, event_name, trace_id, span_id,
    attributes, resource_attributes, scope_name, ingest_batch
from {{ lake('logs') }};
