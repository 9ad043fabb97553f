-- staging: one row per rejected record, with its reason code and the processor that rejected it.
create or replace view quarantine as
select "table" as table_name, tenant_id, service_name, reason, processor, detail, raw, time, ingest_batch
from {{ lake('quarantine') }};
