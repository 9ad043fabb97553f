-- staging: one row per push outcome per (provider, ledger entry); the latest outcome wins.
create or replace view stg_export_outbox as
select
    provider, entry_id, idempotency_key, tenant_id, meter, period_start, period_end, quantity, status, reason,
    provider_ref, attempts, pushed_at, ingest_batch as export_run
from {{ lake('export_outbox') }};
