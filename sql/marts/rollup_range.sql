-- marts: range macros over the rollup marts (tenant_sre_rollup, tenant_usage_rollup, fleet_*).
-- A rollup mart holds the same figures at several grains: one row per block (`grain`: hour, day,
-- ISO week or calendar month) starting at `period_start` (UTC). These macros return the rows of
-- the fewest, coarsest blocks that together cover a time range exactly, so a dashboard reads about
-- 25 rows per tenant for 90 days instead of 2,160 hourly ones, with the same sums and maxima:
--
--   hourly_rollup_range(rollup, range_start, range_end, bucket): the hours h with
--       range_start <= h < range_end (the rule of the hourly marts); finest grain hour.
--   daily_rollup_range(rollup, range_start, range_end, bucket): the days d with
--       range_start <= d (midnight UTC) < range_end (the rule of the daily marts); finest grain day.
--
-- `bucket` is the period the caller groups by (hour, day, week, month): every block returned lies
-- inside one bucket, so date_trunc(bucket, period_start) files it correctly. Totals over the range
-- may pass any bucket; 'week' reads the fewest rows for ranges of weeks to months.
--
-- How: a block is used only when all of its hours (days) are in the range, and a finer block only
-- outside the coarser blocks used, down to single hours (days) at the ragged ends. With the range's
-- hours [S, E) (S, E: range_start, range_end rounded up to the hour), the whole days are those
-- starting in [ceil_day(S), floor_day(E)), the whole weeks (months) those in [ceil(S), floor(E)),
-- and ceil(ceil_hour(x)) = ceil(x), floor(ceil_hour(x)) = floor(x + 1 hour - 1 us): that is the
-- arithmetic below. It is written out flat, not with helper macros, because DuckDB expands macros
-- when it binds a query and deeply nested ones cost milliseconds per call; every bound is a
-- constant once the range is bound, so each grain is one scan whose filters prune on the zone maps
-- of a table sorted by (grain, period_start). "Not in the coarser window" stays right when that
-- window is empty (its start is then at or after its end).

create or replace macro hourly_rollup_range(rollup, range_start, range_end, bucket) as table
select * exclude (grain) from query_table(rollup)
where grain = (case when bucket in ('week', 'month') then bucket end)
  and period_start >= date_trunc(bucket, range_start + ('1 ' || bucket)::interval - interval 1 microsecond)
  and period_start < date_trunc(bucket, range_end + interval 1 hour - interval 1 microsecond)
union all
select * exclude (grain) from query_table(rollup)
where grain = 'day' and bucket in ('day', 'week', 'month')
  and period_start >= date_trunc('day', range_start + interval 1 day - interval 1 microsecond)
  and period_start < date_trunc('day', range_end + interval 1 hour - interval 1 microsecond)
  and (bucket not in ('week', 'month')
       or period_start < date_trunc(bucket, range_start + ('1 ' || bucket)::interval - interval 1 microsecond)
       or period_start >= date_trunc(bucket, range_end + interval 1 hour - interval 1 microsecond))
union all
select * exclude (grain) from query_table(rollup)
where grain = 'hour'
  and period_start >= range_start and period_start < range_end
  and (bucket not in ('day', 'week', 'month')
       or period_start < date_trunc('day', range_start + interval 1 day - interval 1 microsecond)
       or period_start >= date_trunc('day', range_end + interval 1 hour - interval 1 microsecond));

create or replace macro daily_rollup_range(rollup, range_start, range_end, bucket) as table
select * exclude (grain) from query_table(rollup)
where grain = (case when bucket in ('week', 'month') then bucket end)
  and period_start >= date_trunc(bucket, range_start + ('1 ' || bucket)::interval - interval 1 microsecond)::date
  and period_start < date_trunc(bucket, range_end + interval 1 day - interval 1 microsecond)::date
union all
select * exclude (grain) from query_table(rollup)
where grain = 'day'
  and period_start >= date_trunc('day', range_start + interval 1 day - interval 1 microsecond)::date
  and period_start < date_trunc('day', range_end + interval 1 day - interval 1 microsecond)::date
  and (bucket not in ('week', 'month')
       or period_start < date_trunc(bucket, range_start + ('1 ' || bucket)::interval - interval 1 microsecond)::date
       or period_start >= date_trunc(bucket, range_end + interval 1 day - interval 1 microsecond)::date);
