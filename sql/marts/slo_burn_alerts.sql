-- marts: one row per alert episode per tenant per SLO per rule (multi-window, multi-burn-rate,
-- Google SRE workbook ch. 5): a rule fires at a minute when the burn rate (bad/total over the
-- window divided by the error budget 1 - objective) is at least its factor over BOTH its long and
-- its short window ending at that minute. Pages: 1h & 5m >= 14.4, 6h & 30m >= 6; tickets:
-- 1d & 2h >= 3, 3d & 6h >= 1. Firing minutes closer than the short window join one episode.
create or replace view slo_burn_alerts as
with minutes as (
    select minute, tenant_id, slo, any_value(objective_pct) as objective_pct,
           sum(total) as total, sum(bad) as bad
    from tenant_slo_minutely
    group by all
),
windows as (
    select minute, tenant_id, slo, objective_pct,
           sum(bad) over w5m / nullif(sum(total) over w5m, 0) as r5m,
           sum(bad) over w30m / nullif(sum(total) over w30m, 0) as r30m,
           sum(bad) over w1h / nullif(sum(total) over w1h, 0) as r1h,
           sum(bad) over w2h / nullif(sum(total) over w2h, 0) as r2h,
           sum(bad) over w6h / nullif(sum(total) over w6h, 0) as r6h,
           sum(bad) over w1d / nullif(sum(total) over w1d, 0) as r1d,
           sum(bad) over w3d / nullif(sum(total) over w3d, 0) as r3d
    from minutes
    window
        w5m as (partition by tenant_id, slo order by minute range between interval 4 minutes preceding and current row),
        w30m as (partition by tenant_id, slo order by minute range between interval 29 minutes preceding and current row),
        w1h as (partition by tenant_id, slo order by minute range between interval 59 minutes preceding and current row),
        w2h as (partition by tenant_id, slo order by minute range between interval 119 minutes preceding and current row),
        w6h as (partition by tenant_id, slo order by minute range between interval 359 minutes preceding and current row),
        w1d as (partition by tenant_id, slo order by minute range between interval 1439 minutes preceding and current row),
        w3d as (partition by tenant_id, slo order by minute range between interval 4319 minutes preceding and current row)
),
rules as (
    select * from (values
        ('page_1h_5m', 'page', 14.4, 5),
        ('page_6h_30m', 'page', 6.0, 30),
        ('ticket_1d_2h', 'ticket', 3.0, 120),
        ('ticket_3d_6h', 'ticket', 1.0, 360)
    ) as r(rule, severity, factor, short_minutes)
),
evaluated as (
    select w.minute, w.tenant_id, w.slo, r.rule, r.severity, r.factor, r.short_minutes,
           case r.rule when 'page_1h_5m' then w.r1h when 'page_6h_30m' then w.r6h
                       when 'ticket_1d_2h' then w.r1d else w.r3d end / (1 - w.objective_pct / 100.0) as long_burn_rate,
           case r.rule when 'page_1h_5m' then w.r5m when 'page_6h_30m' then w.r30m
                       when 'ticket_1d_2h' then w.r2h else w.r6h end / (1 - w.objective_pct / 100.0) as short_burn_rate
    from windows w cross join rules r
),
firing as (
    select *,
           case when lag(minute) over (partition by tenant_id, slo, rule order by minute)
                     >= minute - to_minutes(short_minutes::bigint) then 0 else 1 end as starts_episode
    from evaluated
    where long_burn_rate >= factor and short_burn_rate >= factor
),
episodes as (
    select *, sum(starts_episode) over (partition by tenant_id, slo, rule order by minute) as episode
    from firing
),
final as (
    select tenant_id, slo, rule, severity, factor,
           min(minute) as started_at, max(minute) + interval 1 minute as last_firing_at,
           count(*) as firing_minutes,
           max(long_burn_rate) as max_long_burn_rate, max(short_burn_rate) as max_short_burn_rate
    from episodes
    group by tenant_id, slo, rule, severity, factor, episode
)
select * from final;
