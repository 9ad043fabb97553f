"""``sample``: tier-aware head sampling of spans for storage, with exact re-weighting.

Spans only; every other table passes through untouched. For each span:

1. errors (``status_code == "error"``, when ``keep_errors``) and slow spans (``duration_ms >=
   slow_ms``) are always kept, weight unchanged;
2. every other span is kept with probability ``P = tiers[tenant_tier]`` percent
   (``default_percent`` for tiers not listed and for spans without a tier). The decision is a
   threshold on the low 56 bits of the ``trace_id`` (as in OpenTelemetry's consistent probability
   sampling), so all spans of a trace with one P are kept or dropped together, on any host, in any
   run, and a trace kept at 10% is also kept at 50%;
3. a span kept by probability gets ``sample_weight *= 100 / P``, so ``sum(sample_weight)`` over
   kept spans is an unbiased count of all spans (SRE request and error rates are re-weighted with
   it). Weights multiply, so spans already sampled upstream stay exact.

Spans left out are **not** quarantined: they are counted as ``sampled_out`` per tenant and in
``Result.sampled_out``, so ``input == kept + quarantined + sampled_out``. Spans whose ``trace_id``
is not 32 lower-case hex characters cannot be sampled consistently and are kept with their
weight (``validate`` quarantines spans with no trace id). Usage extraction runs before sampling
(the pipeline's order), so sampling never changes what is billed.

Example (every option, with example values)::

    processors:
      - sample:
          tiers: {free: 10, pro: 50, enterprise: 100}
          default_percent: 100
          keep_errors: true
          slow_ms: 1000           # null: no slow-span rule
"""

from __future__ import annotations

from collections import Counter
from typing import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from collector_processors import base, maps
from collector_processors.base import Processor, Result
from collector_processors.options import Options
from tenantry import schemas

_TWO_56 = float(1 << 56)


class SampleOptions(Options):
    #: tier -> percent of ordinary spans kept (0-100)
    tiers: dict[str, float] = Field(default_factory=dict)
    #: percent kept for tiers not listed and spans without a tier
    default_percent: float = Field(default=100.0, ge=0, le=100)
    #: always keep spans with status_code error
    keep_errors: bool = True
    #: always keep spans at least this slow, in milliseconds (null: off)
    slow_ms: float | None = Field(default=1000.0, ge=0)

    @field_validator("tiers")
    @classmethod
    def _percents(cls, v: dict[str, float]) -> dict[str, float]:
        for tier, p in v.items():
            if not 0 <= p <= 100:
                raise ValueError(f"{tier}: expected a percent between 0 and 100; got {p!r}")
        return v


class Sample(Processor):
    """Keep errors, slow spans and P% of traces per tier; weight kept spans by 100/P."""

    type_name = "sample"
    accepts_views = True

    def __init__(self, name: str | None = None, options: Mapping | SampleOptions | None = None):
        super().__init__(name)
        self.options = options if isinstance(options, SampleOptions) else SampleOptions.build(options, self.name)
        self._tier_names = pa.array(list(self.options.tiers), pa.string())
        self._tier_pct = np.array(list(self.options.tiers.values()) + [self.options.default_percent], dtype=np.float64)

    def process(self, table: str, batch: pa.Table | pa.RecordBatch, views: maps.BatchViews | None = None) -> Result:
        batch = base.as_table(batch)
        if table != "spans" or batch.num_rows == 0:
            return Result(batch, schemas.empty("quarantine"), base.count_by_tenant(batch, self.name, base.KEPT, views))
        n = batch.num_rows
        pct = self._percent(batch)
        always = self._always(batch)
        h, hashable = trace_hash(batch.column("trace_id"))
        by_chance = hashable & ~always & ((pct >= 100.0) | (h.astype(np.float64) < pct / 100.0 * _TWO_56))
        keep = always | ~hashable | by_chance
        weight = np.asarray(pc.fill_null(batch.column("sample_weight"), 1.0).to_numpy(zero_copy_only=False), np.float64)
        # a span kept by chance has pct > 0, so the division is safe where it is used
        factor = np.where(by_chance & (pct < 100.0), 100.0 / np.maximum(pct, 1e-9), 1.0)
        out = batch.set_column(
            batch.schema.get_field_index("sample_weight"),
            batch.schema.field("sample_weight"),
            pa.array(weight * factor, pa.float64()),
        )
        stats: Counter = Counter()
        kept = out if keep.all() else out.filter(pa.array(keep))
        dropped = n - kept.num_rows
        if views is not None:
            if dropped:
                stats.update(views.count_by_tenant(batch, self.name, base.SAMPLED_OUT, rows=~keep))
                # the kept rows' tenants are a subset of the batch's: no need to encode them again
                codes, names = views.tenant_codes(batch.column("tenant_id"))
                views.put_tenant_codes(kept.column("tenant_id"), codes[keep], names)
            stats.update(views.count_by_tenant(kept, self.name, base.KEPT))
        else:
            if dropped:
                stats.update(base.count_by_tenant(batch.select(["tenant_id"]).filter(pa.array(~keep)), self.name, base.SAMPLED_OUT))
            stats.update(base.count_by_tenant(kept, self.name, base.KEPT))
        return Result(kept, schemas.empty("quarantine"), stats, sampled_out=dropped)

    def _percent(self, batch: pa.Table) -> np.ndarray:
        if not len(self._tier_names):
            return np.full(batch.num_rows, self.options.default_percent)
        idx = pc.fill_null(pc.index_in(batch.column("tenant_tier"), value_set=self._tier_names), len(self._tier_names))
        return self._tier_pct[maps.flat(idx).to_numpy(zero_copy_only=False)]

    def _always(self, batch: pa.Table) -> np.ndarray:
        o = self.options
        m = np.zeros(batch.num_rows, dtype=bool)
        if o.keep_errors:
            m |= maps.np_bool(pc.equal(batch.column("status_code"), "error"))
        if o.slow_ms is not None:
            dur = batch.column("duration_ms")
            if dur.null_count:
                span_ns = pc.cast(pc.subtract(batch.column("end_time"), batch.column("start_time")), pa.int64())
                dur = pc.coalesce(dur, pc.divide(pc.cast(span_ns, pa.float64()), 1e6))
            m |= maps.np_bool(pc.greater_equal(dur, o.slow_ms))
        return m


def trace_hash(trace_id: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """The low 56 bits of each 32-hex-digit trace id, and a mask of the ids that had them.

    Read from the string buffers with numpy: an id qualifies when it is valid, exactly 32 bytes
    long and every byte is a lower-case hex digit.
    """
    ids = maps.flat(trace_id)
    n = len(ids)
    h = np.zeros(n, dtype=np.uint64)
    if n == 0:
        return h, np.zeros(0, dtype=bool)
    if pa.types.is_large_string(ids.type):
        ids = ids.cast(pa.string())
    ok = maps.byte_lengths(ids) == 32
    if ids.null_count:
        ok &= maps.np_bool(ids.is_valid())
    if not ok.any():
        return h, ok
    offsets = np.frombuffer(ids.buffers()[1], dtype=np.int32)[ids.offset : ids.offset + n + 1]
    data = np.frombuffer(ids.buffers()[2], dtype=np.uint8)
    rows = np.nonzero(ok)[0]
    if len(rows) == n and offsets[-1] - offsets[0] == 32 * n:  # contiguous: a zero-copy view
        digits = data[offsets[0] : offsets[0] + 32 * n].reshape(n, 32)
    else:
        digits = data[offsets[rows][:, None] + np.arange(32)]
    # byte arithmetic rather than a 256-entry lookup table: a few passes over contiguous memory
    dec = digits - np.uint8(48)  # '0'..'9' -> 0..9 (anything else wraps around to >= 10)
    is_dec = dec < 10
    is_hex = is_dec | (digits - np.uint8(97) < 6)  # or 'a'..'f'
    q = is_hex.view(np.uint64).reshape(len(rows), 4)
    hexes = (q[:, 0] & q[:, 1] & q[:, 2] & q[:, 3]) == 0x0101010101010101
    # the last 14 hex digits = 7 bytes = 56 bits, read as one big-endian integer
    tail = digits[:, 18:]
    nib = np.where(is_dec[:, 18:], dec[:, 18:], tail - np.uint8(87))
    packed = np.zeros((len(rows), 8), dtype=np.uint8)
    packed[:, 1:] = (nib[:, 0::2] << 4) | nib[:, 1::2]
    value = packed.view(">u8").ravel()
    if hexes.all():
        h[rows] = value
    else:
        ok[rows[~hexes]] = False
        h[rows[hexes]] = value[hexes]
    return h, ok
