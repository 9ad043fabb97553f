-- marts: one row per day per tenant: auth failures (401), authorization denials (403), rate-limit
-- rejections (429), cross-tenant accesses, tenant mismatches (baggage vs verified tenant),
-- redactions made by the redaction processor, and (on the '__unattributed__' row) telemetry records
-- that arrived without tenant context. processor_stats has no event time: a run's redactions are
-- dated on the last day that run saw spans of the tenant (else of any tenant; else null).
create or replace view tenant_security_daily as
with counters as (
    select hour::date as day, tenant_id, sum(requests) as requests, sum(errors) as errors,
           sum(auth_failures) as auth_failures, sum(authz_denials) as authz_denials,
           sum(rate_limited) as rate_limited, sum(cross_tenant_access) as cross_tenant_access,
           sum(tenant_mismatch) as tenant_mismatch
    from stg_security_hourly_partials
    group by all
),
run_days as (
    select ingest_batch, tenant_id, max(hour)::date as day
    from stg_security_hourly_partials
    group by all
),
run_any_day as (
    select ingest_batch, max(day) as day from run_days group by all
),
redactions as (
    select coalesce(rd.day, ra.day) as day, s.tenant_id, sum(s.count) as redactions
    from stg_processor_stats s
    left join run_days rd on rd.ingest_batch = s.ingest_batch and rd.tenant_id = s.tenant_id
    left join run_any_day ra on ra.ingest_batch = s.ingest_batch
    where s.outcome like 'redacted%' and s.tenant_id is not null
    group by all
),
unattributed as (
    select day, '__unattributed__' as tenant_id, sum(unattributed) as unattributed_records
    from telemetry_coverage
    where unattributed > 0
    group by all
),
keys as (
    select day, tenant_id from counters
    union
    select day, tenant_id from redactions
    union
    select day, tenant_id from unattributed
),
final as (
    select k.day, k.tenant_id,
           coalesce(c.requests, 0) as requests, coalesce(c.errors, 0) as errors,
           coalesce(c.auth_failures, 0) as auth_failures, coalesce(c.authz_denials, 0) as authz_denials,
           coalesce(c.rate_limited, 0) as rate_limited,
           coalesce(c.cross_tenant_access, 0) as cross_tenant_access,
           coalesce(c.tenant_mismatch, 0) as tenant_mismatch,
           coalesce(r.redactions, 0) as redactions,
           coalesce(u.unattributed_records, 0) as unattributed_records
    from keys k
    left join counters c on c.day is not distinct from k.day and c.tenant_id = k.tenant_id
    left join redactions r on r.day is not distinct from k.day and r.tenant_id = k.tenant_id
    left join unattributed u on u.day is not distinct from k.day and u.tenant_id = k.tenant_id
)
select * from final;
