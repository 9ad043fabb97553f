"""Mergeable latency quantile sketches stored as bucket counts (DDSketch, vectorized).

The sketch is DDSketch's logarithmic mapping (the ``ddsketch`` library's ``LogarithmicMapping``
defines the buckets; this module only computes the same keys for a whole Arrow column at once):
a positive value ``v`` falls in bucket ``key = ceil(log(v) / log(gamma))`` and the bucket stands for
``gamma**key * 2 / (1 + gamma)``, within ``relative_accuracy`` of every value in it. Values
``<= 0`` go to :data:`ZERO_KEY` and stand for 0.

A sketch is stored as rows ``(group..., key, count)``. Sketches merge by adding counts per key, so
hourly partials sum to a day exactly, and the quantile of the merged rows equals the quantile of a
sketch built over the whole day directly. The SQL views compute quantiles from the same rows with
the macro ``sketch_value(key)`` (see :func:`sql_macros`).
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
from ddsketch.mapping import LogarithmicMapping

#: relative accuracy of every latency quantile tenantry reports (1%)
RELATIVE_ACCURACY = 0.01
MAPPING = LogarithmicMapping(RELATIVE_ACCURACY)
GAMMA = MAPPING.gamma
#: bucket for values <= 0 (and nulls/NaN are not counted at all)
ZERO_KEY = -(2**31)

_LN_GAMMA = math.log(GAMMA)


def keys(values: pa.Array | pa.ChunkedArray | np.ndarray) -> np.ndarray:
    """Bucket keys (int32) for ``values``; the caller drops nulls/NaN first."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        values = values.to_numpy(zero_copy_only=False)
    v = np.asarray(values, dtype=np.float64)
    out = np.full(v.shape, ZERO_KEY, dtype=np.int64)
    pos = v > 0
    out[pos] = np.ceil(np.log(v[pos]) / _LN_GAMMA)
    return out.astype(np.int32)


def value(key: int) -> float:
    """The value a bucket stands for (same as ``MAPPING.value(key)``; 0 for :data:`ZERO_KEY`)."""
    if key == ZERO_KEY:
        return 0.0
    return GAMMA**key * 2.0 / (1.0 + GAMMA)


def quantile(bucket_keys, counts, q: float) -> float | None:
    """Quantile ``q`` (0..1) of a sketch given as parallel key/count sequences (DDSketch rank rule)."""
    k = np.asarray(bucket_keys, dtype=np.int64)
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum()
    if total <= 0:
        return None
    order = np.argsort(k, kind="stable")
    k, c = k[order], c[order]
    rank = q * (total - 1)
    idx = int(np.searchsorted(np.cumsum(c), rank, side="right"))
    idx = min(idx, len(k) - 1)
    return value(int(k[idx]))


def sql_macros() -> str:
    """DuckDB macros the views use to turn bucket keys back into milliseconds."""
    return (
        f"create or replace macro sketch_value(k) as "
        f"case when k = {ZERO_KEY} then 0.0 else pow({GAMMA!r}, k) * {2.0 / (1.0 + GAMMA)!r} end;\n"
    )
