"""Which signal a protobuf request body holds, when nothing says so.

OTLP protobuf bodies do not name their signal: a ``.pb`` file gets it from a hint in its name,
else from the bytes. Inference parses the body as each signal's request and keeps the ones that
decode with at least one record and no unknown fields in their first resource and record; it
answers only when exactly one signal fits, and never guesses between several.
"""

from __future__ import annotations

import re

from google.protobuf import unknown_fields
from google.protobuf.message import DecodeError

from tenantry.otlp.messages import REQUEST_CLASSES

_HINTS = {
    "traces": re.compile(r"trace|span"),
    "logs": re.compile(r"log"),
    "metrics": re.compile(r"metric"),
}


def signal_from_name(name: str) -> str | None:
    """The signal a file name hints at (``traces-1.pb``, ``otel_logs.pb.gz``), None if none or several."""
    lower = name.lower()
    found = [s for s, pattern in _HINTS.items() if pattern.search(lower)]
    return found[0] if len(found) == 1 else None


def _first_record(signal: str, req):
    for res in getattr(req, {"traces": "resource_spans", "logs": "resource_logs", "metrics": "resource_metrics"}[signal]):
        for scope in getattr(res, {"traces": "scope_spans", "logs": "scope_logs", "metrics": "scope_metrics"}[signal]):
            records = getattr(scope, {"traces": "spans", "logs": "log_records", "metrics": "metrics"}[signal])
            if len(records):
                return res, records[0]
    return None, None


def _clean(msg) -> bool:
    return len(unknown_fields.UnknownFieldSet(msg)) == 0


def infer_signal(body: bytes) -> str | None:
    """The one signal ``body`` parses as with records and no unknown fields, else None."""
    fits = []
    for signal, cls in REQUEST_CLASSES.items():
        try:
            req = cls.FromString(body)
        except (DecodeError, RecursionError):
            continue
        res, record = _first_record(signal, req)
        if record is not None and _clean(req) and _clean(res) and _clean(record):
            fits.append(signal)
    return fits[0] if len(fits) == 1 else None
