-- marts: one row per hour per tenant per service per operation.
-- RED metrics from mergeable partials; latency quantiles from the hourly DDSketch buckets merged
-- over the hour (1% relative accuracy; DDSketch rank rule: first bucket whose running count
-- exceeds q*(n-1)). Merging buckets is exact, so a hour's quantile is the one of a hour-long sketch.
create or replace view tenant_red_hourly as
with partials as (
    select date_trunc('hour', minute) as hour, tenant_id, service_name, operation,
           sum(requests) as requests, sum(errors) as errors, sum(duration_sum_ms) as duration_sum_ms
    from stg_red_minutely_partials
    group by all
),
buckets as (
    select date_trunc('hour', hour) as hour, tenant_id, service_name, operation, key, sum(count) as n
    from stg_latency_sketch_op_hourly
    group by all
),
running as (
    select *,
           sum(n) over (partition by hour, tenant_id, service_name, operation order by key
                        rows between unbounded preceding and current row) as cum_n,
           sum(n) over (partition by hour, tenant_id, service_name, operation) as total_n
    from buckets
),
quantiles as (
    select hour, tenant_id, service_name, operation,
           sketch_value(min(key) filter (where cum_n > 0.50 * (total_n - 1))) as p50_ms,
           sketch_value(min(key) filter (where cum_n > 0.90 * (total_n - 1))) as p90_ms,
           sketch_value(min(key) filter (where cum_n > 0.95 * (total_n - 1))) as p95_ms,
           sketch_value(min(key) filter (where cum_n > 0.99 * (total_n - 1))) as p99_ms
    from running
    group by all
),
final as (
    select p.hour, p.tenant_id, p.service_name, p.operation, p.requests, p.errors,
           case when p.requests > 0 then p.errors / p.requests end as error_rate,
           case when p.requests > 0 then p.duration_sum_ms / p.requests end as mean_ms,
           q.p50_ms, q.p90_ms, q.p95_ms, q.p99_ms
    from partials p
    left join quantiles q using (hour, tenant_id, service_name, operation)
)
select * from final;
