-- marts: one row per minute per tenant per SLO: valid (total) and bad events of the SLI
-- (availability: error requests; latency: requests slower than the SLO's threshold_ms).
create or replace view tenant_slo_minutely as
with minutes as (
    select minute, tenant_id, sum(requests) as requests, sum(errors) as errors,
           sum(slow_over_50ms) as s50, sum(slow_over_100ms) as s100, sum(slow_over_250ms) as s250,
           sum(slow_over_500ms) as s500, sum(slow_over_1000ms) as s1000, sum(slow_over_2500ms) as s2500,
           sum(slow_over_5000ms) as s5000
    from stg_red_minutely_partials
    group by all
),
final as (
    select m.minute, m.tenant_id, t.slo, t.sli, t.objective_pct, t.window_days,
           m.requests as total,
           case when t.sli = 'availability' then m.errors
                else case t.threshold_ms when 50 then s50 when 100 then s100 when 250 then s250
                          when 500 then s500 when 1000 then s1000 when 2500 then s2500
                          when 5000 then s5000 end
           end as bad
    from minutes m
    join tenant_slo_targets t using (tenant_id)
)
select * from final;
