-- tenant: table macros scoped to one tenant. Every tenant-facing read goes through these, so a
-- tenant id is a bound parameter, never spliced into SQL text.
create or replace macro tenant_usage_daily_for(t) as table
    select * from tenant_usage_daily where tenant_id = t;
create or replace macro tenant_sre_hourly_for(t) as table
    select * from tenant_sre_hourly where tenant_id = t;
