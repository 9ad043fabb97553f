-- staging: latency sketch buckets, one row per (hour, tenant, service, bucket key) per ingest batch.
-- The pipeline writes buckets per operation only (latency_sketch_op_hourly); a service's buckets are
-- their sums over operations, exactly the counts of a service-level sketch. Earlier versions also
-- wrote the service-level table (latency_sketch_hourly): its rows still count, and the operation
-- rows of the same ingest batches are then left out so that nothing counts twice.
create or replace view stg_latency_sketch_hourly as
with written as (
    select hour, tenant_id, service_name, key, count, ingest_batch
    from {{ lake('latency_sketch_hourly') }}
),
by_operation as (
    select hour, tenant_id, service_name, key, sum(count) as count, ingest_batch
    from {{ lake('latency_sketch_op_hourly') }}
    where ingest_batch not in (select ingest_batch from written)
    group by hour, tenant_id, service_name, key, ingest_batch
)
select * from written
union all
select * from by_operation;
