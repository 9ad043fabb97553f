-- staging: tenant-context coverage partials, one row per (day, signal) per ingest batch.
create or replace view stg_coverage_partials as
select day, signal, total, unattributed, ingest_batch
from {{ lake('coverage_partials') }};
