-- staging: one row per committed invoice line (append-only; a re-rating adds difference lines).
create or replace view stg_invoice_lines as
select
    line_id, period, tenant_id, plan, currency, segment_start, segment_end, trial, meter, line_type,
    price_model, quantity, included, billable_quantity, unit_price, tiers_json, amount, kind, rated_at,
    ingest_batch as bill_run
from {{ lake('invoice_lines') }};
