-- marts: one row per day per tenant per SLO: the day's attainment, and over the SLO's rolling
-- window (window_days ending that day) the attainment and the error budget left.
-- error_budget_remaining_pct = 100 * (1 - bad / (total * (1 - objective))): 100 untouched, <0 overspent.
create or replace view tenant_slo_daily as
with daily as (
    select minute::date as day, tenant_id, slo, sli, any_value(objective_pct) as objective_pct,
           any_value(window_days) as window_days, sum(total) as total, sum(bad) as bad
    from tenant_slo_minutely
    group by minute::date, tenant_id, slo, sli
),
rolling as (
    select d.day, d.tenant_id, d.slo, d.sli, d.objective_pct, d.window_days, d.total, d.bad,
           sum(w.total) as window_total, sum(w.bad) as window_bad
    from daily d
    join daily w on w.tenant_id = d.tenant_id and w.slo = d.slo
                and w.day > d.day - d.window_days and w.day <= d.day
    group by all
),
final as (
    select day, tenant_id, slo, sli, objective_pct, window_days, total, bad,
           case when total > 0 then 100.0 * (1 - bad / total) end as attainment_pct,
           window_total, window_bad,
           case when window_total > 0 then 100.0 * (1 - window_bad / window_total) end as window_attainment_pct,
           case when window_total > 0
                then 100.0 * (1 - window_bad / (window_total * (1 - objective_pct / 100.0))) end
               as error_budget_remaining_pct
    from rolling
)
select * from final;
