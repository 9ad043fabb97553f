-- staging: one row per usage event as delivered (duplicates included; marts deduplicate).
create or replace view usage_events as
select
    event_id, tenant_id, meter, quantity, unit, time, dimensions, source,
    service_name, trace_id, span_id, ingest_batch
from {{ lake('usage_events') }};
