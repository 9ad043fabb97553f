"""The normalized tables: the one definition of every Arrow schema tenantry moves data in.

Every module that builds, reads or writes a normalized table imports its schema from here.
Every row carries ``tenant_id`` (or :data:`UNATTRIBUTED`), ``service_name``, an event time and
``ingest_batch``, the identity of the input it came from (a landing segment or an input file's
content hash), so any row can be traced back to what delivered it.

Conventions:
- times are ``timestamp[ns, tz=UTC]``;
- trace and span ids are lower-case hex strings (32 and 16 characters), empty ids are null;
- attribute maps are ``map<string, string>``: scalar values as their text, arrays and key-value
  lists as compact JSON, so every value survives and DuckDB can index them (``attributes['k']``);
- exact quantities are ``decimal128(38, 9)`` (never floats): billing must add up to the unit.
"""

from __future__ import annotations

import enum

import pyarrow as pa

from tenantry.conventions import (  # noqa: F401  (re-exported: the one definition is there)
    TENANT_ID_KEY,
    TENANT_ID_RE,
    TENANT_TIER_KEY,
    UNATTRIBUTED,
    USAGE_ATTR_PREFIX,
    USAGE_DIMENSION_PREFIX,
    USAGE_EVENT_ID_KEY,
    USAGE_EVENT_NAME,
    USAGE_METER_KEY,
    USAGE_QUANTITY_KEY,
    USAGE_UNIT_KEY,
    USER_ID_KEY,
)

#: tenant_id for shared cost kept by the platform rather than spread over tenants.
PLATFORM = "__platform__"
#: attribute value that replaces values past a cardinality cap.
OVERFLOW = "__overflow__"

TS = pa.timestamp("ns", tz="UTC")
ATTRS = pa.map_(pa.string(), pa.string())
QUANTITY = pa.decimal128(38, 9)

_COMMON_TAIL = [
    pa.field("ingest_batch", pa.string(), nullable=False),
]

SPANS = pa.schema(
    [
        pa.field("tenant_id", pa.string(), nullable=False),
        pa.field("tenant_tier", pa.string()),
        pa.field("user_id", pa.string()),
        pa.field("service_name", pa.string(), nullable=False),
        pa.field("trace_id", pa.string()),
        pa.field("span_id", pa.string()),
        pa.field("parent_span_id", pa.string()),
        pa.field("name", pa.string()),
        # unspecified | internal | server | client | producer | consumer
        pa.field("kind", pa.string()),
        # unset | ok | error
        pa.field("status_code", pa.string()),
        pa.field("status_message", pa.string()),
        pa.field("start_time", TS),
        pa.field("end_time", TS),
        pa.field("duration_ms", pa.float64()),
        pa.field("attributes", ATTRS),
        pa.field("resource_attributes", ATTRS),
        pa.field("scope_name", pa.string()),
        # 1/p for a span kept with probability p by the sampler; 1.0 when unsampled.
        pa.field("sample_weight", pa.float64(), nullable=False),
        *_COMMON_TAIL,
    ]
)

LOGS = pa.schema(
    [
        pa.field("tenant_id", pa.string(), nullable=False),
        pa.field("tenant_tier", pa.string()),
        pa.field("user_id", pa.string()),
        pa.field("service_name", pa.string(), nullable=False),
        pa.field("time", TS),
        pa.field("observed_time", TS),
        pa.field("severity_number", pa.int32()),
        pa.field("severity_text", pa.string()),
        pa.field("body", pa.string()),
        pa.field("event_name", pa.string()),
        pa.field("trace_id", pa.string()),
        pa.field("span_id", pa.string()),
        pa.field("attributes", ATTRS),
        pa.field("resource_attributes", ATTRS),
        pa.field("scope_name", pa.string()),
        *_COMMON_TAIL,
    ]
)

METRIC_POINTS = pa.schema(
    [
        pa.field("tenant_id", pa.string(), nullable=False),
        pa.field("tenant_tier", pa.string()),
        pa.field("service_name", pa.string(), nullable=False),
        pa.field("metric_name", pa.string()),
        pa.field("description", pa.string()),
        pa.field("unit", pa.string()),
        # gauge | sum | histogram | exponential_histogram | summary
        pa.field("type", pa.string()),
        pa.field("time", TS),
        pa.field("start_time", TS),
        # gauge and sum points; for histograms and summaries the sum is in `sum`
        pa.field("value", pa.float64()),
        pa.field("count", pa.int64()),
        pa.field("sum", pa.float64()),
        pa.field("min", pa.float64()),
        pa.field("max", pa.float64()),
        pa.field("bucket_counts", pa.list_(pa.int64())),
        pa.field("explicit_bounds", pa.list_(pa.float64())),
        pa.field("is_monotonic", pa.bool_()),
        # unspecified | delta | cumulative
        pa.field("aggregation_temporality", pa.string()),
        pa.field("attributes", ATTRS),
        pa.field("resource_attributes", ATTRS),
        pa.field("scope_name", pa.string()),
        *_COMMON_TAIL,
    ]
)

USAGE_EVENTS = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("tenant_id", pa.string(), nullable=False),
        pa.field("meter", pa.string(), nullable=False),
        pa.field("quantity", QUANTITY, nullable=False),
        pa.field("unit", pa.string()),
        pa.field("time", TS, nullable=False),
        pa.field("dimensions", ATTRS),
        # app (explicit record_usage) | derived (extracted from telemetry by a meter definition)
        pa.field("source", pa.string(), nullable=False),
        pa.field("service_name", pa.string(), nullable=False),
        # evidence for derived usage (and for app usage recorded inside a span)
        pa.field("trace_id", pa.string()),
        pa.field("span_id", pa.string()),
        *_COMMON_TAIL,
    ]
)

QUARANTINE = pa.schema(
    [
        # which normalized table (or "request" for a whole undecodable input)
        pa.field("table", pa.string(), nullable=False),
        pa.field("tenant_id", pa.string()),
        pa.field("service_name", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("processor", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
        # the rejected record, as JSON (or base64 of undecodable bytes)
        pa.field("raw", pa.string()),
        pa.field("time", TS),
        *_COMMON_TAIL,
    ]
)

TABLES: dict[str, pa.Schema] = {
    "spans": SPANS,
    "logs": LOGS,
    "metric_points": METRIC_POINTS,
    "usage_events": USAGE_EVENTS,
    "quarantine": QUARANTINE,
}

#: Signal tables (what telemetry decodes into); quarantine is the fifth, for what was rejected.
SIGNAL_TABLES = ("spans", "logs", "metric_points", "usage_events")


class Reason(str, enum.Enum):
    """The closed set of quarantine reason codes. Every quarantined row carries one."""

    MALFORMED_REQUEST = "malformed_request"  # an input that could not be decoded at all
    MALFORMED_RECORD = "malformed_record"  # one record with a broken field (e.g. histogram shape)
    MISSING_TENANT = "missing_tenant"
    INVALID_TENANT_ID = "invalid_tenant_id"  # too long, bad characters, hostile
    UNKNOWN_TENANT = "unknown_tenant"  # not in the configured catalog
    TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"
    END_BEFORE_START = "end_before_start"
    TOO_MANY_ATTRIBUTES = "too_many_attributes"
    VALUE_TOO_LONG = "value_too_long"
    MISSING_FIELD = "missing_field"
    INVALID_QUANTITY = "invalid_quantity"  # non-finite, negative, unparseable
    UNDECLARED_METER = "undeclared_meter"  # strict metering only
    DUPLICATE_EVENT = "duplicate_event"
    DENIED_ATTRIBUTE = "denied_attribute"
    PROCESSOR_ERROR = "processor_error"  # a processor failed on a batch (a bug); the rows are kept here

    def __str__(self) -> str:  # so f-strings and Arrow arrays get the code, not the repr
        return self.value


REASON_CODES: frozenset[str] = frozenset(r.value for r in Reason)


def empty(table: str) -> pa.Table:
    """An empty table with the schema of ``table``."""
    return LAKE_TABLES[table].empty_table()


def conform(table: str, data: pa.Table | pa.RecordBatch) -> pa.Table:
    """Cast ``data`` to the schema of ``table``: columns in order, missing nullable ones as nulls.

    Raises ``ValueError`` naming the column when a non-nullable column is missing.
    """
    schema = LAKE_TABLES[table]
    if isinstance(data, pa.RecordBatch):
        data = pa.Table.from_batches([data])
    cols = []
    for field in schema:
        if field.name in data.column_names:
            col = data.column(field.name)
            if col.type != field.type:
                col = col.cast(field.type)
            cols.append(col)
        elif field.nullable:
            cols.append(pa.nulls(data.num_rows, field.type))
        else:
            raise ValueError(f"{table}: required column {field.name!r} is missing")
    return pa.Table.from_arrays(cols, schema=schema)


# --- Aggregates: mergeable partials (DESIGN.md "Storage"). Runs and stream panes add rows; the
# views sum them. Nothing is recomputed from scratch to stay correct.

#: one row per (hour, tenant, service) per ingest batch; requests/errors re-weighted by sample_weight
SRE_HOURLY_PARTIALS = pa.schema(
    [
        pa.field("hour", TS, nullable=False),
        pa.field("tenant_id", pa.string(), nullable=False),
        pa.field("service_name", pa.string(), nullable=False),
        pa.field("requests", pa.float64(), nullable=False),
        pa.field("errors", pa.float64(), nullable=False),
        pa.field("duration_sum_ms", pa.float64(), nullable=False),
        pa.field("ingest_batch", pa.string(), nullable=False),
    ]
)

#: latency sketch bucket counts (tenantry.sketch) per (hour, tenant, service, key): written by pipeline
#: versions before 0.2.0 only; the views now sum latency_sketch_op_hourly over operations instead
LATENCY_SKETCH_HOURLY = pa.schema(
    [
        pa.field("hour", TS, nullable=False),
        pa.field("tenant_id", pa.string(), nullable=False),
        pa.field("service_name", pa.string(), nullable=False),
        pa.field("key", pa.int32(), nullable=False),
        pa.field("count", pa.float64(), nullable=False),
        pa.field("ingest_batch", pa.string(), nullable=False),
    ]
)

#: rows per (day, signal) with how many had no tenant
COVERAGE_PARTIALS = pa.schema(
    [
        pa.field("day", pa.date32(), nullable=False),
        pa.field("signal", pa.string(), nullable=False),
        pa.field("total", pa.int64(), nullable=False),
        pa.field("unattributed", pa.int64(), nullable=False),
        pa.field("ingest_batch", pa.string(), nullable=False),
    ]
)

#: processor counters per (table, tenant, processor, outcome)
PROCESSOR_STATS = pa.schema(
    [
        pa.field("table", pa.string(), nullable=False),
        pa.field("tenant_id", pa.string()),
        pa.field("processor", pa.string(), nullable=False),
        pa.field("outcome", pa.string(), nullable=False),
        pa.field("count", pa.int64(), nullable=False),
        pa.field("ingest_batch", pa.string(), nullable=False),
    ]
)

AGGREGATES: dict[str, pa.Schema] = {
    "sre_hourly_partials": SRE_HOURLY_PARTIALS,
    "latency_sketch_hourly": LATENCY_SKETCH_HOURLY,
    "coverage_partials": COVERAGE_PARTIALS,
    "processor_stats": PROCESSOR_STATS,
}

#: every table the lake holds, by name
LAKE_TABLES: dict[str, pa.Schema] = {**TABLES, **AGGREGATES}


# --- Ledger (issue: usage meters and the billing-ready ledger). Append-only; never updated.

#: one row per ledger entry. The balance of (tenant, meter, period, dimensions) is the SUM of its
#: entries' quantities: a new revision or an adjustment carries the difference, never a total.
USAGE_LEDGER = pa.schema(
    [
        pa.field("entry_id", pa.string(), nullable=False),  # deterministic: tenant, meter, period, dims, revision
        pa.field("tenant_id", pa.string(), nullable=False),
        pa.field("meter", pa.string(), nullable=False),
        pa.field("period_start", TS, nullable=False),
        pa.field("period_end", TS, nullable=False),
        pa.field("dimensions", ATTRS),
        pa.field("dimensions_key", pa.string(), nullable=False),  # canonical JSON of dimensions ("{}" if none)
        pa.field("quantity", QUANTITY, nullable=False),
        pa.field("unit", pa.string()),
        pa.field("event_count", pa.int64(), nullable=False),
        pa.field("revision", pa.int32(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),  # usage | adjustment | credit
        pa.field("supersedes", pa.string()),  # entry_id this one corrects (adjustments, revisions)
        pa.field("computed_at", TS, nullable=False),
        pa.field("pipeline_version", pa.string(), nullable=False),
        pa.field("ingest_batch", pa.string(), nullable=False),  # the run that wrote it
    ]
)

#: one row per usage event the ledger accepted: the dedup index (event_id per tenant, across runs)
#: and the evidence behind each entry. Duplicates and quarantined events get no row here.
USAGE_DEDUP = pa.schema(
    [
        pa.field("tenant_id", pa.string(), nullable=False),
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("meter", pa.string(), nullable=False),
        pa.field("period_start", TS, nullable=False),
        pa.field("dimensions_key", pa.string(), nullable=False),
        # no entry_id: the entry this event is counted in is the run's (ingest_batch) one entry of
        # this (tenant_id, meter, period_start, dimensions_key); ledger_evidence joins on that
        pa.field("quantity", QUANTITY, nullable=False),
        pa.field("time", TS, nullable=False),  # event time; the dedup window is measured on it
        pa.field("source", pa.string(), nullable=False),
        pa.field("trace_id", pa.string()),
        pa.field("span_id", pa.string()),
        pa.field("ingest_batch", pa.string(), nullable=False),  # the run that accepted it
    ]
)

LEDGER_TABLES: dict[str, pa.Schema] = {"usage_ledger": USAGE_LEDGER, "usage_dedup": USAGE_DEDUP}
LAKE_TABLES.update(LEDGER_TABLES)

# --- SRE and security families (issue: per-tenant SRE and security metrics) go below.

#: latency thresholds (ms) counted per minute: a latency SLO's threshold_ms must be one of these
LATENCY_LADDER_MS = (50, 100, 250, 500, 1000, 2500, 5000)

#: one row per (minute, tenant, service, operation) per run: RED counts re-weighted by sample_weight,
#: and per ladder step the (weighted) requests slower than it (the latency SLI at minute grain)
RED_MINUTELY_PARTIALS = pa.schema(
    [
        pa.field("minute", TS, nullable=False),
        pa.field("tenant_id", pa.string(), nullable=False),
        pa.field("service_name", pa.string(), nullable=False),
        pa.field("operation", pa.string(), nullable=False),  # span name (OTel: "{method} {http.route}")
        pa.field("requests", pa.float64(), nullable=False),
        pa.field("errors", pa.float64(), nullable=False),
        pa.field("duration_sum_ms", pa.float64(), nullable=False),
        *[pa.field(f"slow_over_{t}ms", pa.float64(), nullable=False) for t in LATENCY_LADDER_MS],
        pa.field("ingest_batch", pa.string(), nullable=False),
    ]
)

#: latency sketch buckets (tenantry.sketch) per (hour, tenant, service, operation, key)
LATENCY_SKETCH_OP_HOURLY = pa.schema(
    [
        pa.field("hour", TS, nullable=False),
        pa.field("tenant_id", pa.string(), nullable=False),
        pa.field("service_name", pa.string(), nullable=False),
        pa.field("operation", pa.string(), nullable=False),
        pa.field("key", pa.int32(), nullable=False),
        pa.field("count", pa.float64(), nullable=False),
        pa.field("ingest_batch", pa.string(), nullable=False),
    ]
)

#: security counters per (hour, tenant, service), weighted by sample_weight
SECURITY_HOURLY_PARTIALS = pa.schema(
    [
        pa.field("hour", TS, nullable=False),
        pa.field("tenant_id", pa.string(), nullable=False),
        pa.field("service_name", pa.string(), nullable=False),
        pa.field("requests", pa.float64(), nullable=False),
        pa.field("errors", pa.float64(), nullable=False),
        pa.field("auth_failures", pa.float64(), nullable=False),
        pa.field("authz_denials", pa.float64(), nullable=False),
        pa.field("rate_limited", pa.float64(), nullable=False),
        pa.field("cross_tenant_access", pa.float64(), nullable=False),
        pa.field("tenant_mismatch", pa.float64(), nullable=False),
        pa.field("ingest_batch", pa.string(), nullable=False),
    ]
)

#: evidence: every cross-tenant / tenant-mismatch span, and a few trace ids per (hour, tenant, kind)
#: of auth failures, denials and rate limiting
SECURITY_EVENTS = pa.schema(
    [
        pa.field("time", TS, nullable=False),
        pa.field("tenant_id", pa.string(), nullable=False),
        pa.field("service_name", pa.string(), nullable=False),
        # cross_tenant_access | tenant_mismatch | auth_failure | authz_denied | rate_limited
        pa.field("kind", pa.string(), nullable=False),
        pa.field("trace_id", pa.string()),
        pa.field("span_id", pa.string()),
        pa.field("detail", pa.string()),  # resource owner / claimed tenant / status code
        pa.field("ingest_batch", pa.string(), nullable=False),
    ]
)

#: SLO objectives per tenant resolved from tenantry.yaml `slos:` (tenantry.slo); latest computed_at wins
SLO_TARGETS = pa.schema(
    [
        pa.field("tenant_id", pa.string(), nullable=False),
        pa.field("tier", pa.string()),
        pa.field("slo", pa.string(), nullable=False),
        pa.field("sli", pa.string(), nullable=False),  # availability | latency
        pa.field("objective_pct", pa.float64(), nullable=False),
        pa.field("threshold_ms", pa.float64()),
        pa.field("window_days", pa.int32(), nullable=False),
        pa.field("computed_at", TS, nullable=False),
        pa.field("ingest_batch", pa.string(), nullable=False),
    ]
)

SRE_SECURITY_TABLES: dict[str, pa.Schema] = {
    "red_minutely_partials": RED_MINUTELY_PARTIALS,
    "latency_sketch_op_hourly": LATENCY_SKETCH_OP_HOURLY,
    "security_hourly_partials": SECURITY_HOURLY_PARTIALS,
    "security_events": SECURITY_EVENTS,
    "slo_targets": SLO_TARGETS,
}
LAKE_TABLES.update(SRE_SECURITY_TABLES)

# --- Billing and export tables (issue: rating and billing exports) go below.
# All append-only, committed per run (a bill, export or reconcile run is a run_id with a manifest).
# Money is exact: amounts are rounded to the currency's minor unit, then stored as QUANTITY.

#: one row per invoice line draft. A re-rating appends the difference as new lines (kind
#: "adjustment"); the invoice of (tenant, period) is the SUM of its lines, never an edit.
INVOICE_LINES = pa.schema(
    [
        pa.field("line_id", pa.string(), nullable=False),  # deterministic: key of the line + rating run
        pa.field("period", pa.string(), nullable=False),  # "2026-11"
        pa.field("tenant_id", pa.string(), nullable=False),
        pa.field("plan", pa.string(), nullable=False),
        pa.field("currency", pa.string(), nullable=False),
        pa.field("segment_start", TS, nullable=False),  # the part of the period this plan applied to
        pa.field("segment_end", TS, nullable=False),
        pa.field("trial", pa.bool_(), nullable=False),
        pa.field("meter", pa.string(), nullable=False),  # "" for the minimum-commitment true-up
        pa.field("line_type", pa.string(), nullable=False),  # usage | flat | minimum_commitment
        pa.field("price_model", pa.string(), nullable=False),  # flat | per_unit | graduated | volume | package | unpriced | minimum
        pa.field("quantity", QUANTITY, nullable=False),
        pa.field("included", QUANTITY, nullable=False),
        pa.field("billable_quantity", QUANTITY, nullable=False),
        pa.field("unit_price", QUANTITY),
        pa.field("tiers_json", pa.string()),  # tier breakdown of the full rating, JSON
        pa.field("amount", QUANTITY, nullable=False),  # in `currency`, rounded to its minor unit
        pa.field("kind", pa.string(), nullable=False),  # rating | adjustment
        pa.field("rated_at", TS, nullable=False),
        pa.field("ingest_batch", pa.string(), nullable=False),  # the bill run
    ]
)

#: what each tenant's plan grants per meter and period (snapshot per bill run; latest wins)
PLAN_ENTITLEMENTS = pa.schema(
    [
        pa.field("period", pa.string(), nullable=False),
        pa.field("tenant_id", pa.string(), nullable=False),
        pa.field("plan", pa.string(), nullable=False),
        pa.field("meter", pa.string(), nullable=False),
        pa.field("segment_start", TS, nullable=False),
        pa.field("segment_end", TS, nullable=False),
        pa.field("trial", pa.bool_(), nullable=False),
        pa.field("included", QUANTITY, nullable=False),
        pa.field("limit", QUANTITY),  # null: unlimited
        pa.field("computed_at", TS, nullable=False),
        pa.field("ingest_batch", pa.string(), nullable=False),
    ]
)

#: the export outbox: one row per push outcome per (provider, ledger entry). Latest row wins;
#: acknowledged / rejected / stale are final, failed is retried by the next export run.
EXPORT_OUTBOX = pa.schema(
    [
        pa.field("provider", pa.string(), nullable=False),
        pa.field("entry_id", pa.string(), nullable=False),
        pa.field("idempotency_key", pa.string(), nullable=False),
        pa.field("tenant_id", pa.string(), nullable=False),
        pa.field("meter", pa.string(), nullable=False),
        pa.field("period_start", TS, nullable=False),
        pa.field("period_end", TS, nullable=False),
        pa.field("quantity", QUANTITY, nullable=False),
        pa.field("status", pa.string(), nullable=False),  # acknowledged | rejected | stale | failed
        pa.field("reason", pa.string()),
        pa.field("provider_ref", pa.string()),  # the provider's id for the record (no secrets)
        pa.field("attempts", pa.int32(), nullable=False),
        pa.field("pushed_at", TS, nullable=False),
        pa.field("ingest_batch", pa.string(), nullable=False),  # the export run
    ]
)

#: one row per revenue-leakage finding of a reconcile run
LEAKAGE_FINDINGS = pa.schema(
    [
        pa.field("period", pa.string(), nullable=False),
        pa.field("tenant_id", pa.string(), nullable=False),
        pa.field("meter", pa.string()),
        pa.field("provider", pa.string()),
        # telemetry_vs_app | unexported | rejected | stale | failed | overage_not_billed | no_plan | no_billing_account
        pa.field("kind", pa.string(), nullable=False),
        pa.field("expected_quantity", QUANTITY),
        pa.field("actual_quantity", QUANTITY),
        pa.field("gap_quantity", QUANTITY),
        pa.field("amount_at_risk", QUANTITY),  # null when it cannot be priced (no plan)
        pa.field("currency", pa.string()),
        pa.field("detail", pa.string()),
        pa.field("computed_at", TS, nullable=False),
        pa.field("ingest_batch", pa.string(), nullable=False),  # the reconcile run
    ]
)

BILLING_TABLES: dict[str, pa.Schema] = {
    "invoice_lines": INVOICE_LINES,
    "plan_entitlements": PLAN_ENTITLEMENTS,
    "export_outbox": EXPORT_OUTBOX,
    "leakage_findings": LEAKAGE_FINDINGS,
}
LAKE_TABLES.update(BILLING_TABLES)

# --- Cost tables (issue: cost allocation and margin) go below.

#: one row per normalized input cost line (FOCUS, AWS CUR 2.0 or a simple cost.csv). A newer
#: ingest of the same ``source_key`` (file path or s3:// URL) supersedes the older one in the views.
COST_LINES = pa.schema(
    [
        pa.field("line_id", pa.string(), nullable=False),  # "<ingest_batch>:<row>"
        pa.field("source_key", pa.string(), nullable=False),
        pa.field("source_format", pa.string(), nullable=False),  # focus | cur2 | simple
        pa.field("charge_period_start", TS, nullable=False),
        pa.field("charge_period_end", TS, nullable=False),
        pa.field("day", pa.date32(), nullable=False),  # UTC day of charge_period_start
        pa.field("service", pa.string(), nullable=False),
        # usage | purchase | tax | credit | adjustment | idle (unused split capacity) | split_residual
        pa.field("category", pa.string(), nullable=False),
        pa.field("resource_id", pa.string()),
        pa.field("tenant_tag", pa.string()),  # raw value of the tenant tag, unvalidated
        pa.field("tags", ATTRS),
        pa.field("amount", QUANTITY, nullable=False),
        pa.field("currency", pa.string(), nullable=False),
        pa.field("ingested_at", TS, nullable=False),
        *_COMMON_TAIL,  # "cost:<sha256 of the file>"
    ]
)

#: one row per (cost line, tenant share); tenant_id null = unallocated (``reason`` says why).
#: For every line_id the amounts add up exactly to the line's amount.
COST_ALLOCATIONS = pa.schema(
    [
        pa.field("line_id", pa.string(), nullable=False),
        pa.field("day", pa.date32(), nullable=False),
        pa.field("service", pa.string(), nullable=False),
        pa.field("tenant_id", pa.string()),
        pa.field("amount", QUANTITY, nullable=False),
        pa.field("currency", pa.string(), nullable=False),
        # direct | proportional | even | fixed | shared_spread | shared_platform | unallocated
        pa.field("method", pa.string(), nullable=False),
        pa.field("rule", pa.string()),
        pa.field("driver", pa.string()),
        pa.field("driver_quantity", QUANTITY),
        pa.field("reason", pa.string()),
        pa.field("cost_batch", pa.string(), nullable=False),  # ingest_batch of the cost line
        pa.field("allocated_at", TS, nullable=False),
        *_COMMON_TAIL,  # the allocation run
    ]
)

COST_TABLES: dict[str, pa.Schema] = {"cost_lines": COST_LINES, "cost_allocations": COST_ALLOCATIONS}
LAKE_TABLES.update(COST_TABLES)


class CostReason(str, enum.Enum):
    """Why a share of a cost line could not be attributed to a tenant (``cost_allocations.reason``)."""

    NO_MATCHING_RULE = "no_matching_rule"
    NO_DRIVER_DATA = "no_driver_data"  # a driver rule matched but measured nothing in the period
    INVALID_TENANT_TAG = "invalid_tenant_tag"  # tag value is not a valid tenant id (hostile, too long)
    UNKNOWN_TENANT_TAG = "unknown_tenant_tag"  # valid id, not in the configured catalog
    UNATTRIBUTED_USAGE = "unattributed_usage"  # the share driven by telemetry without tenant context

    def __str__(self) -> str:
        return self.value
