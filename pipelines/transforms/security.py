"""Security partials: per (hour, tenant, service) counters and the evidence spans behind them.

What counts (attribute names and status codes come from :class:`tenantry.security.SecuritySettings`,
defaulting to OpenTelemetry semantic conventions):

- ``auth_failures`` / ``authz_denials`` / ``rate_limited``: requests (server or consumer spans) whose
  HTTP status (``http.response.status_code``, else the older ``http.status_code``) is 401 / 403 / 429,
  or whose ``auth_failure_attribute`` holds one of ``auth_failure_values``;
- ``cross_tenant_access``: any span whose resource-owner attribute (``tenant.resource_owner``) names
  another tenant than the span's verified ``tenant_id``;
- ``tenant_mismatch``: any span carrying ``tenant.baggage_id`` (set by tenantry's middleware when
  the caller's baggage claimed another tenant) that differs from ``tenant_id``.

Counts are weighted by ``sample_weight``. ``security_events`` keeps every cross-tenant and
mismatch span (with its trace id) and at most :data:`EVIDENCE_PER_GROUP` trace ids per (hour,
tenant, kind) per batch of auth failures, denials and rate limiting: evidence, not a second copy.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.io import Chunk
from pipelines.transforms.partials import Family, as_part, summing
from pipelines.transforms.sre import SpanKeys, span_keys
from tenantry import schemas
from tenantry.security import SecuritySettings

SECURITY_HOURLY = Family(
    "security_hourly_partials",
    ("hour", "tenant_id", "service_name"),
    ("requests", "errors", "auth_failures", "authz_denials", "rate_limited", "cross_tenant_access", "tenant_mismatch"),
)
EVENTS = "security_events"
EVIDENCE_PER_GROUP = 5
_HOUR_NS = 3600 * 10**9


def attribute_columns(attrs: pa.ChunkedArray | pa.MapArray, keys: list[str]) -> dict[str, pa.Array]:
    """One string column per wanted key (null where absent; the last entry wins on duplicates).

    Works on the flattened map once (one string comparison per wanted key over all entries), which
    is several times faster than ``pc.map_lookup`` per key on large batches.
    """
    if isinstance(attrs, pa.ChunkedArray):
        attrs = attrs.combine_chunks() if attrs.num_chunks != 1 else attrs.chunk(0)
    n = len(attrs)
    if n == 0:
        return {k: pa.nulls(0, pa.string()) for k in keys}
    # .keys/.items ignore slicing, so work from the absolute offsets of this (possibly sliced) array
    offsets = attrs.offsets.to_numpy()
    lo, hi = int(offsets[0]), int(offsets[-1])
    if attrs.null_count:  # a null map's entries (if any) belong to no row
        keep = np.repeat(attrs.is_valid().to_numpy(zero_copy_only=False), np.diff(offsets))
    else:
        keep = None
    parents = np.repeat(np.arange(n), np.diff(offsets))
    flat_keys = attrs.keys.slice(lo, hi - lo)
    flat_items = attrs.items.slice(lo, hi - lo)
    out = {}
    for key in keys:
        hit_mask = pc.fill_null(pc.equal(flat_keys, key), False).to_numpy(zero_copy_only=False)
        if keep is not None:
            hit_mask &= keep
        hit = np.flatnonzero(hit_mask)
        if len(hit) == 0:
            out[key] = pa.nulls(n, pa.string())
            continue
        idx = np.full(n, -1, dtype=np.int64)
        idx[parents[hit]] = hit  # ascending assignment: the last duplicate wins
        out[key] = flat_items.take(pa.array(idx, mask=idx < 0)).cast(pa.string())  # null where absent
    return out


def _status_codes(attrs: dict[str, pa.Array], settings: SecuritySettings) -> pa.Array:
    codes = pa.nulls(len(next(iter(attrs.values()))), pa.string())
    for key in reversed(settings.status_code_attributes):  # the first listed attribute wins
        codes = pc.coalesce(attrs[key], codes)
    return codes


def security_partials(spans: pa.Table, settings: SecuritySettings,
                      keys: SpanKeys | None = None) -> tuple[pa.Table | None, pa.Table | None]:
    """(security_hourly_partials rows, security_events rows) of one batch of spans; None when
    empty. ``keys``: the batch's :func:`~pipelines.transforms.sre.span_keys`, when the caller has
    them already (the SRE partials group by the same hour, tenant and service)."""
    if spans.num_rows == 0:
        return None, None
    keys = keys or span_keys(spans)
    wanted = list(dict.fromkeys([*settings.status_code_attributes, settings.resource_owner_attribute,
                                 settings.baggage_attribute,
                                 *([settings.auth_failure_attribute] if settings.auth_failure_attribute else [])]))
    attrs = attribute_columns(spans.column("attributes"), wanted)
    tenant = spans.column("tenant_id")
    is_req = keys.is_request
    status = _status_codes(attrs, settings)
    status_codes = _Members(status)

    def status_in(codes) -> np.ndarray:
        return is_req & status_codes.isin([str(c) for c in codes])

    auth = status_in(settings.auth_failure_status_codes)
    if settings.auth_failure_attribute:
        auth = auth | (is_req & _Members(attrs[settings.auth_failure_attribute]).isin(settings.auth_failure_values))
    owner = attrs[settings.resource_owner_attribute]
    claimed = attrs[settings.baggage_attribute]
    flags = {
        "auth_failure": auth,
        "authz_denied": status_in(settings.authz_denied_status_codes),
        "rate_limited": status_in(settings.rate_limited_status_codes),
        "cross_tenant_access": _differs(owner, tenant),
        "tenant_mismatch": _differs(claimed, tenant),
    }
    # counted per (hour, tenant, service) over the spans with a start time
    timed, weight = keys.timed, keys.weight[keys.timed]

    def weighted(mask: np.ndarray) -> np.ndarray:
        return keys.hourly.sums(weight, mask[timed])

    sums = {
        "requests": weighted(keys.is_request), "errors": weighted(keys.is_request & keys.is_error),
        "auth_failures": weighted(flags["auth_failure"]), "authz_denials": weighted(flags["authz_denied"]),
        "rate_limited": weighted(flags["rate_limited"]), "cross_tenant_access": weighted(flags["cross_tenant_access"]),
        "tenant_mismatch": weighted(flags["tenant_mismatch"]),
    }
    total = sums["requests"]
    for c in SECURITY_HOURLY.sums[1:]:  # the groups with something to count
        total = total + sums[c]
    counts = keys.hourly.table(SECURITY_HOURLY, sums, keep=total > 0)
    details = {"auth_failure": status, "authz_denied": status, "rate_limited": status,
               "cross_tenant_access": owner, "tenant_mismatch": claimed}
    events = _evidence(spans, keys.start_ns, flags, details)
    return (counts if counts.num_rows else None), (events if events.num_rows else None)


def _differs(claimed: pa.Array, tenant: pa.ChunkedArray) -> np.ndarray:
    """True where ``claimed`` is a non-empty value other than ``tenant``."""
    if claimed.null_count == len(claimed):  # the attribute is on no span of the batch
        return np.zeros(len(claimed), bool)
    nonempty = pc.and_(pc.is_valid(claimed), pc.not_equal(pc.fill_null(claimed, ""), ""))
    differs = pc.fill_null(pc.and_(nonempty, pc.not_equal(claimed, tenant)), False)
    return np.asarray(differs.to_numpy(zero_copy_only=False), dtype=bool)


class _Members:
    """Set membership tests over one string column, hashing each value once: the column's
    distinct values are tested, and rows take their value's answer (null is in no set)."""

    def __init__(self, column: pa.Array):
        enc = pc.dictionary_encode(column)
        self.values = enc.dictionary.to_pylist()
        # nulls point one past the distinct values, at an entry that is always False
        self.codes = pc.fill_null(enc.indices, len(self.values)).to_numpy(zero_copy_only=False)

    def isin(self, members) -> np.ndarray:
        wanted = {str(m) for m in members}
        return np.array([v in wanted for v in self.values] + [False], bool)[self.codes]


def _evidence(spans: pa.Table, start_ns: np.ndarray, flags: dict[str, np.ndarray],
              details: dict[str, pa.Array]) -> pa.Table:
    parts = []
    for kind, mask in flags.items():
        idx = np.flatnonzero(mask)
        if len(idx) == 0:
            continue
        if kind in ("auth_failure", "authz_denied", "rate_limited"):
            idx = _first_per_group(idx, start_ns, spans.column("tenant_id"))
        take = pa.array(idx)
        parts.append(pa.table({
            "time": spans.column("start_time").take(take),
            "tenant_id": spans.column("tenant_id").take(take),
            "service_name": spans.column("service_name").take(take),
            "kind": pa.repeat(pa.scalar(kind), len(idx)),
            "trace_id": spans.column("trace_id").take(take),
            "span_id": spans.column("span_id").take(take),
            "detail": details[kind].take(take),
        }))
    if not parts:
        return schemas.SECURITY_EVENTS.empty_table().drop_columns(["ingest_batch"])
    events = pa.concat_tables(parts)
    return events.filter(pc.is_valid(events.column("time")))


def _first_per_group(idx: np.ndarray, start_ns: np.ndarray, tenant: pa.ChunkedArray) -> np.ndarray:
    """The first EVIDENCE_PER_GROUP row indexes of each (hour, tenant) among ``idx``."""
    h = start_ns[idx]
    t = pc.dictionary_encode(tenant.take(pa.array(idx))).combine_chunks().indices.to_numpy()
    code = h // _HOUR_NS * 1_000_003 + t
    order = np.argsort(code, kind="stable")
    sorted_code = code[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_code)) + 1]
    rank = np.arange(len(idx)) - np.repeat(starts, np.diff(np.r_[starts, len(idx)]))
    return np.sort(idx[order][rank < EVIDENCE_PER_GROUP])


def merge_events(tables) -> pa.Table:
    tables = [t for t in tables if t is not None and t.num_rows]
    if not tables:
        return schemas.SECURITY_EVENTS.empty_table().drop_columns(["ingest_batch"])
    return pa.concat_tables(tables)


#: how the security families' partials merge: counts sum per key, evidence rows concatenate
MERGERS = {SECURITY_HOURLY.table: summing(SECURITY_HOURLY), EVENTS: merge_events}


class _SecurityFn(beam.DoFn):
    def __init__(self, settings: SecuritySettings):
        self.settings = settings

    def process(self, chunk):
        table, part, data = chunk
        if table != "spans":
            return
        counts, events = security_partials(data, self.settings)
        if counts is not None:
            yield as_part(SECURITY_HOURLY.table, part, counts)
        if events is not None:
            yield as_part(EVENTS, part, events)


class SecurityPartials(beam.PTransform):
    """Chunks in → ``(family table, part, partial)`` chunks: ``security_hourly_partials`` counts
    and ``security_events`` evidence, one per batch, ready to write to the lake."""

    def __init__(self, settings: SecuritySettings | None = None):
        super().__init__()
        self.settings = settings or SecuritySettings()

    def expand(self, chunks):
        return chunks | "SecurityPerBatch" >> beam.ParDo(_SecurityFn(self.settings)).with_output_types(Chunk)
