-- staging: latency sketch buckets, one row per (hour, tenant, service, operation, bucket key) per ingest batch.
create or replace view stg_latency_sketch_op_hourly as
select hour, tenant_id, service_name, operation, key, count, ingest_batch
from {{ lake('latency_sketch_op_hourly') }};
