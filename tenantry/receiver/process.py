"""Processing in the receiver: decode each group commit, run the processor chain, land the result.

``tenantry collect --process`` (``Receiver(chain=...)``) lands *normalized segments* instead of raw
ones (:func:`tenantry.landing.write_normalized_segment`). :class:`ChainLander` is the write
function the :class:`~tenantry.receiver.writer.GroupCommitWriter` calls for every flush, in its
own thread (never on the event loop). It promises:

- every processor of the chain runs, in order, on every normalized table **except samplers**
  (``type_name == "sample"``): sampling must come after usage is extracted, which the pipeline
  does. The segment records which chain it was (``tenantry.processed_by`` =
  :func:`tenantry.landing.chain_digest` of the *whole* configured chain);
- bad records are quarantine rows with their reason (the decoder's and the processors'), and the
  processors' counters are ``processor_stats`` rows: nothing is dropped silently. Per table
  ``in == kept + quarantined`` and the figures are in the segment (``tenantry.accounting``);
- a flush lands whole or not at all (one file), and its requests are acknowledged only after the
  file is durable; a failed write fails the requests (503 / UNAVAILABLE, clients retry);
- if decoding or the chain fails anyway (a bug: neither raises on bad data), a decoder could not
  read a request it already accepted, or the accounting does not add up, the flush is landed as
  a **raw segment** instead and the problem logged and counted (``raw_fallbacks``): an accepted
  request is never lost. The pipeline then decodes and processes it like any raw segment.
  Note the trade-off: a raw segment holds the request as sent, before redaction.

Example::

    from collector_processors.registry import build_chain
    chain = build_chain(tenantry.config.load("tenantry.yaml"))
    with Receiver("landing", chain=chain):
        ...
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from collector_processors.base import SAMPLER_TYPE, split_samplers
from tenantry import landing, otlp, schemas
from tenantry.receiver.errors import ReceiverConfigError

logger = logging.getLogger(__name__)

#: quarantine ``table`` value of a whole request the decoder could not read
_WHOLE_REQUEST = "request"


class _FallBack(Exception):
    """This flush must be landed raw (the message says why)."""


#: samplers are left to the pipeline (they must run after usage extraction); one definition
storage_processors = split_samplers


def check_compression(compression: str | None) -> str | None:
    """``compression`` if it names a codec of :data:`tenantry.landing.COMPRESSIONS`, else
    :class:`ReceiverConfigError` (at construction, before anything is received)."""
    try:
        landing.ipc_options(compression)
    except ValueError as e:
        raise ReceiverConfigError(f"Receiver: {e}") from None
    return compression


class ChainLander:
    """Write function for :class:`GroupCommitWriter`: ``(landing_dir, records) -> segment path``
    (see the module docstring). Thread-safe counters in :meth:`stats`."""

    def __init__(self, chain: Any, compression: str | None = None):
        if not callable(getattr(chain, "process", None)):
            raise ReceiverConfigError(
                f"Receiver(chain=...): expected a collector_processors Processor, got {type(chain).__name__}; "
                "build one with collector_processors.registry.build_chain(config)"
            )
        from collector_processors.base import Chain  # only a processing receiver needs the processors

        run, samplers = storage_processors(chain)
        self.chain = Chain(run, name="receiver")
        self.deferred = [p.name for p in samplers]
        self.digest = landing.chain_digest(chain)
        self.compression = check_compression(compression)
        self._lock = threading.Lock()
        self._counters: Counter = Counter()

    def stats(self) -> dict[str, int]:
        """``normalized_segments_written``, ``raw_fallbacks``, ``rows_in_<table>``,
        ``rows_kept_<table>``, ``rows_quarantined_<table>``."""
        with self._lock:
            return dict(self._counters)

    def __call__(self, landing_dir: Path, records: Sequence[tuple[str, bytes]]) -> Path:
        name = landing.segment_name("nseg", dt.datetime.now(dt.timezone.utc))
        ingest_batch = f"nseg:{name}"
        try:
            tables, accounting = self.process(records, ingest_batch)
        except Exception as e:  # noqa: BLE001 - an accepted request must land, processed or not
            if not isinstance(e, _FallBack):
                logger.exception("processing a flush of %d requests failed", len(records))
            else:
                logger.error("%s", e)
            path = landing.write_segment(landing_dir, records, compression=self.compression)
            logger.error("landed the flush of %d requests as raw segment %s instead; the pipeline will process it",
                         len(records), path.name)
            with self._lock:
                self._counters["raw_fallbacks"] += 1
            return path
        path = landing.write_normalized_segment(landing_dir, tables, self.digest, ingest_batch, name, accounting,
                                                compression=self.compression)
        with self._lock:
            self._counters["normalized_segments_written"] += 1
            for table, figures in accounting.items():
                for key, n in figures.items():
                    self._counters[f"rows_{key}_{table}"] += n
        return path

    # -- decode + chain (pure: no I/O) ---------------------------------------------------------

    def process(self, records: Sequence[tuple[str, bytes]], ingest_batch: str) -> tuple[dict, dict]:
        """``({table: rows}, {table: {"in", "kept", "quarantined"}})`` for one flush.

        Raises :class:`_FallBack` when the flush must land raw instead.
        """
        decoded = self._decode(records, ingest_batch)
        quarantine = [decoded.pop("quarantine")]
        whole = quarantine[0].filter(pc.equal(quarantine[0].column("table"), _WHOLE_REQUEST))
        if whole.num_rows:
            raise _FallBack(f"accepted requests could not be decoded in the receiver: "
                            f"{whole.column('detail')[0].as_py()}")
        accounting = {t: {"in": n, "kept": 0, "quarantined": n} for t, n in _per_table(quarantine[0]).items()}
        out: dict[str, pa.Table] = {}
        stats = []
        for table, data in decoded.items():
            if data.num_rows == 0:
                continue
            res = self.chain.process(table, data)
            n_q = res.quarantined.num_rows
            if res.kept.num_rows + n_q + res.sampled_out != data.num_rows or res.sampled_out:
                raise _FallBack(f"the processor chain's accounting does not add up for {table}: {data.num_rows} in, "
                                f"{res.kept.num_rows} kept, {n_q} quarantined, {res.sampled_out} sampled out")
            fig = accounting.setdefault(table, {"in": 0, "kept": 0, "quarantined": 0})
            fig["in"] += data.num_rows
            fig["kept"] += res.kept.num_rows
            fig["quarantined"] += n_q
            out[table] = schemas.conform(table, res.kept)
            quarantine.append(res.quarantined)
            if res.stats:
                stats.append(_stats_table(res.stats, table, ingest_batch))
        out["quarantine"] = schemas.conform("quarantine", pa.concat_tables(quarantine))
        if stats:
            out["processor_stats"] = schemas.conform("processor_stats", pa.concat_tables(stats))
        return out, accounting

    @staticmethod
    def _decode(records: Sequence[tuple[str, bytes]], ingest_batch: str) -> dict[str, pa.Table]:
        """All five tables for a flush. Requests of one signal are decoded as one: concatenated
        protobuf messages are their merge, and a merged Export*ServiceRequest is just the list
        of all their resources, so many small requests take the decoder's vectorized path."""
        parts = [otlp.decode_request(signal, b"".join(b for s, b in records if s == signal), ingest_batch)
                 for signal in otlp.SIGNALS if any(s == signal for s, _ in records)]
        return {t: pa.concat_tables([p[t] for p in parts]) if parts else schemas.empty(t) for t in schemas.TABLES}


def _per_table(quarantine: pa.Table) -> dict[str, int]:
    if quarantine.num_rows == 0:
        return {}
    counts = quarantine.group_by("table", use_threads=False).aggregate([([], "count_all")])
    return dict(zip(counts.column("table").to_pylist(), counts.column("count_all").to_pylist()))


def _stats_table(stats: Counter, table: str, ingest_batch: str) -> pa.Table:
    from collector_processors.base import stats_table

    return stats_table(Counter(stats), table, ingest_batch)


__all__ = ["ChainLander", "SAMPLER_TYPE", "storage_processors"]
