"""ExportLogsServiceRequest (lite class) -> the ``logs`` and ``usage_events`` tables.

A log record whose ``event_name`` (or attribute ``event.name``) is ``tenantry.usage`` is a usage
event: it goes to ``usage_events`` (or quarantine) instead of ``logs``, never to both.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from google.protobuf.message import DecodeError

from tenantry import schemas
from tenantry.otlp import columns as C
from tenantry.otlp.anyvalue import AttributeValueError, value_text
from tenantry.otlp.attrs import decode_attribute_lists
from tenantry.otlp.usage import extract_usage


def _body_text(record, i: int, bad: dict) -> str | None:
    if not record.HasField("body"):
        return None
    try:
        return value_text(record.body)
    except (AttributeValueError, RecursionError) as e:
        bad.setdefault(i, f"log body: {e}")
        return None


def _groups(req):
    """(resource attribute lists, scope names, resource index per scope, records per scope, records)."""
    res_lists, scope_names, scope_res, scope_sizes, records = [], [], [], [], []
    for ri, rl in enumerate(req.resource_logs):
        res_lists.append(rl.resource.attributes)
        for sl in rl.scope_logs:
            group = sl.log_records
            scope_names.append(sl.scope.name or None)
            scope_res.append(ri)
            scope_sizes.append(len(group))
            records.extend(group)
    return res_lists, scope_names, scope_res, scope_sizes, records


def decode_logs(req, ingest_batch: str) -> tuple[pa.Table, pa.Table, pa.Table]:
    """(logs, usage_events, quarantine) for one lite request (the upb path)."""
    res_lists, scope_names, scope_res, scope_sizes, records = _groups(req)
    n = len(records)
    if n == 0:
        return C.empty("logs"), C.empty("usage_events"), C.empty("quarantine")
    attrs = decode_attribute_lists([r.attributes for r in records])
    bad = dict(attrs.bad)
    cols = {
        "time": np.array([r.time_unix_nano for r in records], np.uint64),
        "observed": np.array([r.observed_time_unix_nano for r in records], np.uint64),
        "severity": np.array([r.severity_number for r in records], np.int64),
        "severity_text": pa.array([r.severity_text or None for r in records], pa.string()),
        "body": pa.array([_body_text(r, i, bad) for i, r in enumerate(records)], pa.string()),
        "event_name": pa.array([r.event_name or None for r in records], pa.string()),
        "trace_id": C.hex_ids([r.trace_id for r in records]),
        "span_id": C.hex_ids([r.span_id for r in records]),
    }
    return _assemble(n, res_lists, scope_names, scope_res, scope_sizes, attrs, cols, bad, ingest_batch)


def decode_log_bytes(body: bytes, ingest_batch: str):
    """(logs, usage_events, quarantine) decoded by the C accelerator, or None when it is not built
    or defers (the caller then uses :func:`decode_logs`, which gives the same tables)."""
    from tenantry.otlp.messages import LOG_BYTES_REQUEST
    from tenantry.otlp.spans import accelerated, c_columns

    if not accelerated():
        return None
    try:
        req = LOG_BYTES_REQUEST.FromString(body)
    except (DecodeError, RecursionError):
        return None
    res_lists, scope_names, scope_res, scope_sizes, records = _groups(req)
    n = len(records)
    if n == 0:
        return None
    got = c_columns("decode_logs", records)
    if not got:
        return None
    attrs, text, num, _ = got
    cols = {"trace_id": text[0], "span_id": text[1], "severity_text": text[2], "body": text[3],
            "event_name": text[4], "time": num[0].view(np.uint64), "observed": num[1].view(np.uint64),
            "severity": num[2]}
    return _assemble(n, res_lists, scope_names, scope_res, scope_sizes, attrs, cols, {}, ingest_batch)


def _assemble(n, res_lists, scope_names, scope_res, scope_sizes, attrs, cols, bad, ingest_batch):
    """The logs / usage / quarantine tables from the record columns (both decoders)."""
    res = C.Resources(res_lists)
    scope_idx = C.group_index(scope_sizes)
    res_idx = pa.array(scope_res, pa.int64()).take(scope_idx)
    raw_time, raw_observed = cols["time"], cols["observed"]
    time, time_big = C.timestamps(raw_time)
    observed, observed_big = C.timestamps(raw_observed)
    C.note_bad(bad, time_big, "time_unix_nano is beyond the int64 nanosecond range (year 2262)")
    C.note_bad(bad, observed_big, "observed_time_unix_nano is beyond the int64 nanosecond range (year 2262)")
    t_ns = np.where(time_big, 0, np.asarray(raw_time, np.uint64).view(np.int64))
    o_ns = np.where(observed_big, 0, np.asarray(raw_observed, np.uint64).view(np.int64))
    event_time = np.where(t_ns != 0, t_ns, o_ns)

    who = C.attribution(attrs, res, res_idx)
    table = pa.Table.from_arrays(
        [
            who["tenant_id"],
            who["tenant_tier"],
            who["user_id"],
            res.service_name.take(res_idx),
            # OTLP: a record without time_unix_nano happened when it was observed
            pa.array(event_time, pa.int64()).cast(time.type) if (t_ns == 0).any() else time,
            observed,
            pa.array(cols["severity"].astype(np.int32)),
            cols["severity_text"],
            cols["body"],
            cols["event_name"],
            cols["trace_id"],
            cols["span_id"],
            attrs.attributes,
            res.attrs.attributes.take(res_idx),
            pa.array(scope_names, pa.string()).take(scope_idx),
            C.constant(ingest_batch, n),
        ],
        schema=schemas.LOGS,
    )
    is_usage = pc.or_kleene(
        pc.equal(table.column("event_name"), schemas.USAGE_EVENT_NAME),
        pc.equal(attrs.lookup("event.name"), schemas.USAGE_EVENT_NAME),
    )
    is_usage = pc.fill_null(is_usage, False).to_numpy(zero_copy_only=False)
    malformed = np.zeros(n, bool)
    malformed[list(bad)] = True
    quarantine = [C.empty("quarantine")]
    for table_name, mask in (("logs", ~is_usage), ("usage_events", is_usage)):
        sel = np.flatnonzero(mask & malformed)
        if len(sel):
            rows = table.take(pa.array(sel, pa.int64()))
            quarantine.append(C.quarantine_rows(table_name, rows, schemas.Reason.MALFORMED_RECORD,
                                                [bad[i] for i in sel.tolist()]))
    usage, usage_q = extract_usage(table, attrs, np.flatnonzero(is_usage & ~malformed), event_time)
    quarantine.append(usage_q)
    logs = table.filter(pa.array(~is_usage & ~malformed))
    return logs, usage, pa.concat_tables(quarantine)
