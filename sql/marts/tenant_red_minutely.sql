-- marts: one row per minute per tenant per service per operation.
-- RED counts from mergeable partials (re-weighted by sample_weight). No quantiles at this grain:
-- sketches are kept per hour (tenant_red_hourly, tenant_red_daily); the latency SLI per minute is
-- the share of requests over each LATENCY_LADDER_MS threshold (slow_over_<t>ms).
create or replace view tenant_red_minutely as
with partials as (
    select minute, tenant_id, service_name, operation,
           sum(requests) as requests, sum(errors) as errors, sum(duration_sum_ms) as duration_sum_ms,
           sum(slow_over_50ms) as slow_over_50ms, sum(slow_over_100ms) as slow_over_100ms,
           sum(slow_over_250ms) as slow_over_250ms, sum(slow_over_500ms) as slow_over_500ms,
           sum(slow_over_1000ms) as slow_over_1000ms, sum(slow_over_2500ms) as slow_over_2500ms,
           sum(slow_over_5000ms) as slow_over_5000ms
    from stg_red_minutely_partials
    group by all
),
final as (
    select minute, tenant_id, service_name, operation, requests, errors,
           case when requests > 0 then errors / requests end as error_rate,
           case when requests > 0 then duration_sum_ms / requests end as mean_ms,
           slow_over_50ms, slow_over_100ms, slow_over_250ms, slow_over_500ms, slow_over_1000ms,
           slow_over_2500ms, slow_over_5000ms
    from partials
)
select * from final;
