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

#: latency sketch bucket counts (tenantry.sketch) per (hour, tenant, service, key)
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

LEDGER_TABLES: dict[str, pa.Schema] = {"usage_ledger": USAGE_LEDGER}
LAKE_TABLES.update(LEDGER_TABLES)

# --- SRE and security families (issue: per-tenant SRE and security metrics) go below.

# --- Billing and export tables (issue: rating and billing exports) go below.

# --- Cost tables (issue: cost allocation and margin) go below.
