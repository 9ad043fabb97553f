-- marts: one row per security finding per tenant per hour (per day for telemetry without tenant).
-- kinds: cross_tenant_access (high), tenant_mismatch (medium), unattributed_telemetry (low), and
-- request_volume_anomaly / error_rate_anomaly / auth_failures_anomaly: robust z-score
-- (x - median) / max(1.4826 * MAD, floor) over the tenant's previous 24 hours (floor: sqrt(median)
-- for counts, 0.01 for the error rate), flagged at score >= 6 with >= 20 events and >= 6 hours of
-- history (tenantry.security constants); high at score >= 12. Evidence: up to 20 trace ids.
create or replace view security_findings as
with hourly as (
    select hour, tenant_id, sum(requests) as requests, sum(errors) as errors, sum(auth_failures) as auth_failures
    from stg_security_hourly_partials
    group by all
),
metrics as (
    select hour, tenant_id, 'request_volume' as metric, requests as value, requests as events from hourly
    union all
    select hour, tenant_id, 'error_rate', case when requests > 0 then errors / requests else 0 end, errors from hourly
    union all
    select hour, tenant_id, 'auth_failures', auth_failures, auth_failures from hourly
),
scored as (
    select *,
           median(value) over w as baseline_median,
           mad(value) over w as baseline_mad,
           count(*) over w as baseline_hours
    from metrics
    window w as (partition by tenant_id, metric order by hour
                 range between interval 24 hours preceding and interval 1 hour preceding)
),
anomalies as (
    select hour, tenant_id, metric,
           value, events, baseline_median, baseline_hours,
           (value - baseline_median) / greatest(1.4826 * coalesce(baseline_mad, 0),
               case metric when 'error_rate' then 0.01 else sqrt(greatest(baseline_median, 1)) end) as score
    from scored
    where baseline_hours >= 6 and events >= 20
),
evidence as (
    select date_trunc('hour', time) as hour, tenant_id, kind,
           count(*) as events,
           list_slice(list_sort(list(distinct trace_id) filter (where trace_id is not null)), 1, 20) as trace_ids,
           string_agg(distinct detail, ', ' order by detail) as details
    from stg_security_events
    group by all
),
anomaly_findings as (
    select a.tenant_id, a.hour as time, a.metric || '_anomaly' as kind,
           case when a.score >= 12 then 'high' else 'medium' end as severity,
           a.score, a.events::double as events,
           case when a.metric = 'auth_failures' then e.trace_ids end as evidence_trace_ids,
           printf('%s %.4g vs median %.4g over %d hours', a.metric, a.value, a.baseline_median,
                  a.baseline_hours) as detail
    from anomalies a
    left join evidence e on e.hour = a.hour and e.tenant_id = a.tenant_id and e.kind = 'auth_failure'
    where a.score >= 6
),
access_findings as (
    select tenant_id, hour as time, kind,
           case kind when 'cross_tenant_access' then 'high' else 'medium' end as severity,
           null::double as score, events::double as events, trace_ids as evidence_trace_ids,
           case kind when 'cross_tenant_access' then 'resources owned by: ' else 'baggage claimed: ' end
               || details as detail
    from evidence
    where kind in ('cross_tenant_access', 'tenant_mismatch')
),
unattributed_findings as (
    select '__unattributed__' as tenant_id, day::timestamptz as time, 'unattributed_telemetry' as kind,
           'low' as severity, null::double as score, sum(unattributed)::double as events,
           null::varchar[] as evidence_trace_ids,
           string_agg(signal || ': ' || unattributed, ', ' order by signal) as detail
    from telemetry_coverage
    where unattributed > 0
    group by day
),
final as (
    select * from anomaly_findings
    union all by name
    select * from access_findings
    union all by name
    select * from unattributed_findings
)
select tenant_id, time, kind, severity, score, events, evidence_trace_ids, detail from final;
