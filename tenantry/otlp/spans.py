"""ExportTraceServiceRequest (lite class) -> the ``spans`` table, column by column.

This is the hot path of the whole system, so nothing here builds a Python object per span
beyond what reading the protobuf costs: each column is one comprehension over the flat list of
spans, attributes go to the numpy decoder in :mod:`tenantry.otlp.attrs`, ids to a hex lookup
table, and resource / scope values are decoded once per group and repeated with ``take``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from tenantry import schemas
from tenantry.otlp import columns as C
from tenantry.otlp.attrs import decode_attribute_lists
from tenantry.otlp.messages import Status


def _statuses(raw: list) -> tuple[list, list, dict[bytes, str]]:
    """(code ints, messages) per span; each distinct serialized Status is parsed once."""
    parsed: dict[bytes, tuple] = {}
    errors: dict[bytes, str] = {}
    for b in set(raw):
        try:
            st = Status.FromString(b)
            parsed[b] = (int(st.code), st.message or None)
        except Exception as e:  # noqa: BLE001 - any parse failure makes the span malformed
            parsed[b] = (0, None)
            errors[b] = f"span status is not a valid Status message ({e})"
    get = parsed.__getitem__
    pairs = list(map(get, raw))
    return [p[0] for p in pairs], [p[1] for p in pairs], errors


def decode_spans(req, ingest_batch: str) -> tuple[pa.Table, pa.Table]:
    """(spans, quarantine) for one request; malformed spans are quarantined, the rest kept."""
    res_lists, scope_names, scope_res, scope_sizes, spans = [], [], [], [], []
    for ri, rs in enumerate(req.resource_spans):
        res_lists.append(rs.resource.attributes)
        for ss in rs.scope_spans:
            group = ss.spans
            scope_names.append(ss.scope.name or None)
            scope_res.append(ri)
            scope_sizes.append(len(group))
            spans.extend(group)
    n = len(spans)
    if n == 0:
        return schemas.empty("spans"), schemas.empty("quarantine")

    res = C.Resources(res_lists)
    scope_idx = C.group_index(scope_sizes)
    res_idx = pa.array(scope_res, pa.int64()).take(scope_idx)
    attrs = decode_attribute_lists([s.attributes for s in spans])
    bad = dict(attrs.bad)

    starts = [s.start_time_unix_nano for s in spans]
    ends = [s.end_time_unix_nano for s in spans]
    start, start_big = C.timestamps(starts)
    end, end_big = C.timestamps(ends)
    C.note_bad(bad, start_big, "start_time_unix_nano is beyond the int64 nanosecond range (year 2262)")
    C.note_bad(bad, end_big, "end_time_unix_nano is beyond the int64 nanosecond range (year 2262)")
    s_ns = np.where(start_big, 0, np.array(starts, np.uint64).view(np.int64))
    e_ns = np.where(end_big, 0, np.array(ends, np.uint64).view(np.int64))
    duration = (e_ns - s_ns) / 1e6

    codes, messages, status_errors = _statuses([s.status for s in spans])
    if status_errors:
        for i, s in enumerate(spans):
            if s.status in status_errors:
                bad.setdefault(i, status_errors[s.status])

    who = C.attribution(attrs, res, res_idx)
    table = pa.Table.from_arrays(
        [
            who["tenant_id"],
            who["tenant_tier"],
            who["user_id"],
            res.service_name.take(res_idx),
            C.hex_ids([s.trace_id for s in spans]),
            C.hex_ids([s.span_id for s in spans]),
            C.hex_ids([s.parent_span_id for s in spans]),
            pa.array([s.name for s in spans], pa.string()),
            C.enum_names([s.kind for s in spans], C.SPAN_KINDS),
            C.enum_names(codes, C.STATUS_CODES),
            pa.array(messages, pa.string()),
            start,
            end,
            pa.array(duration, pa.float64()),
            attrs.attributes,
            res.attrs.attributes.take(res_idx),
            pa.array(scope_names, pa.string()).take(scope_idx),
            C.constant(1.0, n, pa.float64()),
            C.constant(ingest_batch, n),
        ],
        schema=schemas.SPANS,
    )
    return C.split_bad("spans", table, bad)
