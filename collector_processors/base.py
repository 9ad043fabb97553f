"""The processor interface: Arrow batch in, kept rows and quarantined rows out.

A processor is to tenantry what a processor is to the OpenTelemetry Collector, over Arrow record
batches of one normalized table (``tenantry.schemas``). Its promises:

- ``process`` is vectorized (pyarrow compute), synchronous and does no I/O;
- it never raises on bad data: a bad row becomes a quarantine row with a reason code from
  :class:`tenantry.schemas.Reason` and the processor's name;
- ``input rows == kept rows + quarantined rows + sampled_out``, always (only a sampler sets
  ``sampled_out``: rows it leaves out of storage on purpose, counted, never quarantined);
- bad configuration raises :class:`ProcessorConfigError` when the processor is built, naming the key.

Counters (``Result.stats``) are keyed ``(tenant_id, processor, outcome)``. An outcome is
``kept``, ``quarantined:<reason>``, ``redacted:<detector>``, ``overflowed``, ``sampled_out`` or
``unattributed:<reason>``: the text before ``:`` is the counter, after it the reason. ``kept``,
``quarantined:*`` and ``sampled_out`` count rows; ``redacted:*`` and ``overflowed`` count values.

A :class:`Chain` of processors is itself a processor, so hosts (the receiver, a Beam DoFn, tests)
only ever hold one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from typing import Iterable, Sequence

import pyarrow as pa

from collector_processors import maps
from tenantry import schemas

logger = logging.getLogger(__name__)

KEPT = "kept"
QUARANTINED = "quarantined"
REDACTED = "redacted"
OVERFLOWED = "overflowed"
SAMPLED_OUT = "sampled_out"
UNATTRIBUTED_OUTCOME = "unattributed"


#: immutable, so one instance serves every result without quarantined rows
_EMPTY_QUARANTINE = schemas.empty("quarantine")


class ProcessorConfigError(ValueError):
    """A processor's configuration is invalid. The message names the key and what was expected."""


@dataclasses.dataclass
class Result:
    """What a processor returns: the rows it keeps and the rows it quarantines.

    ``kept`` has the schema of the input table; ``quarantined`` has :data:`schemas.QUARANTINE`.
    ``stats`` counts events per (tenant_id, processor, outcome); see the module docstring.
    ``sampled_out`` is the number of rows a sampler left out of storage on purpose; they are in
    neither ``kept`` nor ``quarantined``, so ``input == kept + quarantined + sampled_out``.
    """

    kept: pa.Table
    quarantined: pa.Table
    stats: Counter = dataclasses.field(default_factory=Counter)
    sampled_out: int = 0


class Processor:
    """Base class. Subclasses set ``type_name`` and implement :meth:`process`.

    Processors built from configuration also set ``options`` (their validated options model), so
    :meth:`describe` can print what is configured.
    """

    type_name: str = "processor"
    options = None
    #: True when ``process`` also takes ``views=`` (a :class:`maps.BatchViews` a chain shares
    #: between its processors, so a batch's maps are flattened and its tenants encoded once)
    accepts_views: bool = False

    def __init__(self, name: str | None = None):
        #: the instance name as configured, e.g. ``redact/strict``
        self.name = name or self.type_name

    def process(self, table: str, batch: pa.Table) -> Result:  # pragma: no cover - interface
        """Process one batch of the normalized ``table``; see the module docstring for promises."""
        raise NotImplementedError

    def describe(self) -> dict:
        """``{name, type, options}``: options that differ from defaults, secrets hidden."""
        summary = self.options.summary() if self.options is not None else {}
        return {"name": self.name, "type": self.type_name, "options": summary}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class Chain(Processor):
    """An ordered list of processors, itself a processor: the output of one feeds the next."""

    type_name = "chain"
    accepts_views = True

    def __init__(self, processors: Sequence[Processor], name: str | None = None):
        super().__init__(name)
        self.processors = list(processors)

    def process(self, table: str, batch: pa.Table | pa.RecordBatch, views: maps.BatchViews | None = None) -> Result:
        """Run every processor in order; sums ``stats`` and ``sampled_out``.

        A processor that raises (a bug: processors do not raise on bad data) does not stop the
        host: the rows it was given are quarantined with reason ``processor_error`` and the
        exception is logged. Processors that accept ``views`` share one per batch.
        """
        quarantined = [_EMPTY_QUARANTINE]
        stats: Counter = Counter()
        sampled_out = 0
        kept = as_table(batch)
        views = views if views is not None else maps.BatchViews()
        for proc in self.processors:
            if kept.num_rows == 0:
                break
            try:
                res = proc.process(table, kept, views=views) if proc.accepts_views else proc.process(table, kept)
            except Exception as exc:  # noqa: BLE001 - the host must keep running; rows are kept in quarantine
                logger.exception("processor %s failed on a %s batch of %d rows", proc.name, table, kept.num_rows)
                q = quarantine_rows(
                    table, kept, schemas.Reason.PROCESSOR_ERROR, proc.name, f"{type(exc).__name__}: {exc}"[:500]
                )
                stats.update(count_by_tenant(kept, proc.name, f"{QUARANTINED}:{schemas.Reason.PROCESSOR_ERROR}"))
                quarantined.append(q)
                kept = kept.schema.empty_table()
                break
            kept = res.kept
            if res.quarantined.num_rows:
                quarantined.append(res.quarantined)
            stats.update(res.stats)
            sampled_out += res.sampled_out
        out_q = quarantined[0] if len(quarantined) == 1 else pa.concat_tables(quarantined)
        return Result(kept, self.scrub_quarantine(out_q), stats, sampled_out)

    def scrub_quarantine(self, quarantined: pa.Table) -> pa.Table:
        """Apply every redactor of the chain to quarantine rows (their raw record and detail), so
        a row rejected before the redactor ran never takes personal data to disk."""
        if quarantined.num_rows == 0:
            return quarantined
        for proc in self.processors:
            scrub = getattr(proc, "scrub_quarantine", None)
            if scrub is not None:
                quarantined = scrub(quarantined)
        return quarantined

    def __iter__(self):
        return iter(self.processors)


#: type name of the processors that only decide what raw rows are stored (see split_samplers)
SAMPLER_TYPE = "sample"


def split_samplers(chain: Processor) -> tuple[list[Processor], list[Processor]]:
    """(every processor but the samplers, the samplers) of a chain, in order; nested chains are
    flattened and a single processor counts as a chain of one.

    Hosts run the first list, then take their figures (usage, SRE), then sample for storage, so
    sampling never changes a billed or reported number.
    """
    subs = getattr(chain, "processors", None)
    procs = [chain] if subs is None else [p for sub in subs for group in split_samplers(sub) for p in group]
    samplers = [p for p in procs if getattr(p, "type_name", "") == SAMPLER_TYPE]
    return [p for p in procs if getattr(p, "type_name", "") != SAMPLER_TYPE], samplers


def as_table(batch: pa.Table | pa.RecordBatch) -> pa.Table:
    """Processors take a ``pa.Table`` or a ``pa.RecordBatch``; they work on tables."""
    if isinstance(batch, pa.RecordBatch):
        return pa.Table.from_batches([batch])
    return batch


def quarantine_rows(
    table: str,
    rows: pa.Table,
    reason: schemas.Reason | str | pa.Array,
    processor: str,
    detail: str | pa.Array | None = None,
) -> pa.Table:
    """Build quarantine rows for ``rows`` (a slice/filter of a ``table`` batch).

    ``raw`` keeps the whole record as JSON so nothing is lost. This runs only on rejected rows,
    which are rare, so the per-row JSON encoding is off the hot path.
    """
    n = rows.num_rows
    if n == 0:
        return schemas.empty("quarantine")
    raw = _raw_json(rows)

    def col(name: str, typ=pa.string()):
        return rows.column(name) if name in rows.column_names else pa.nulls(n, typ)

    def as_array(v):
        if isinstance(v, (pa.Array, pa.ChunkedArray)):
            return v
        return pa.array([None if v is None else str(v)] * n, pa.string())

    time_col = None
    for c in ("time", "start_time"):
        if c in rows.column_names:
            time_col = rows.column(c)
            break
    return pa.Table.from_arrays(
        [
            pa.array([table] * n, pa.string()),
            col("tenant_id"),
            col("service_name"),
            as_array(reason),
            pa.array([processor] * n, pa.string()),
            as_array(detail),
            pa.array(raw, pa.string()),
            time_col if time_col is not None else pa.nulls(n, schemas.TS),
            col("ingest_batch"),
        ],
        schema=schemas.QUARANTINE,
    )


def _raw_json(rows: pa.Table) -> list[str]:
    """Each row as JSON. Timestamps become ISO text first (nanoseconds do not fit ``datetime``)."""
    cols = []
    for field, col in zip(rows.schema, rows.columns):
        if pa.types.is_timestamp(field.type) or pa.types.is_date(field.type):
            col = col.cast(pa.string())
        cols.append(col)
    plain = pa.Table.from_arrays(cols, names=rows.column_names)
    out = []
    for r in plain.to_pylist():
        try:
            out.append(json.dumps(r, default=str, ensure_ascii=False))
        except (TypeError, ValueError):  # e.g. lone surrogates: keep a lossless-enough repr
            out.append(json.dumps({"repr": repr(r)}))
    return out


def count_by_tenant(batch: pa.Table, processor: str, outcome: str, views: maps.BatchViews | None = None) -> Counter:
    """Counter of rows per (tenant_id, processor, outcome), computed with a vectorized group-by.

    With ``views`` (inside a chain) the count comes from the batch's cached ``tenant_id``
    encoding, so processors that keep every row do not group the same column again.
    """
    if views is not None:
        return views.count_by_tenant(batch, processor, outcome)
    out: Counter = Counter()
    if batch.num_rows == 0:
        return out
    counts = batch.select(["tenant_id"]).group_by("tenant_id").aggregate([([], "count_all")])
    for tenant, n in zip(counts.column("tenant_id").to_pylist(), counts.column("count_all").to_pylist()):
        out[(tenant, processor, outcome)] += n
    return out


def stats_table(stats: Counter, table: str, ingest_batch: str) -> pa.Table:
    """Processor counters as rows for the ``processor_stats`` lake table."""
    keys = list(stats.keys())
    out = pa.table(
        {
            "table": pa.array([table] * len(keys), pa.string()),
            "tenant_id": pa.array([k[0] for k in keys], pa.string()),
            "processor": pa.array([k[1] for k in keys], pa.string()),
            "outcome": pa.array([k[2] for k in keys], pa.string()),
            "count": pa.array([stats[k] for k in keys], pa.int64()),
            "ingest_batch": pa.array([ingest_batch] * len(keys), pa.string()),
        }
    )
    schema = getattr(schemas, "PROCESSOR_STATS", None)
    return out.cast(schema) if schema is not None else out


def concat(tables: Iterable[pa.Table], table: str) -> pa.Table:
    """Concatenate batches of one normalized table (an empty table when there are none)."""
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return schemas.empty(table)
    return pa.concat_tables(tables)
