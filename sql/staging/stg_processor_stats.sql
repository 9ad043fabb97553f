-- staging: processor counters, one row per (table, tenant, processor, outcome) per ingest batch.
create or replace view stg_processor_stats as
select "table" as table_name, tenant_id, processor, outcome, count, ingest_batch
from {{ lake('processor_stats') }};
