-- staging: latency sketch buckets, one row per (hour, tenant, service, bucket key) per ingest batch.
create or replace view stg_latency_sketch_hourly as
select hour, tenant_id, service_name, key, count, ingest_batch
from {{ lake('latency_sketch_hourly') }};
