-- staging: one row per metric data point.
create or replace view metric_points as
select
    tenant_id, tenant_tier, service_name, metric_name, description, unit, type,
    time, start_time, value, count, sum, min, max, bucket_counts, explicit_bounds,
    is_monotonic, aggregation_temporality, attributes, resource_attributes, scope_name,
    ingest_batch
from {{ lake('metric_points') }};
