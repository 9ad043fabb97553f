"""The exact largest-remainder split, in three equivalent implementations.

* :func:`split_exact` — the reference, one line at a time in Python integers;
* :func:`split_units` — vectorized over many lines in numpy: ``int64`` whenever every product
  fits 63 bits (after dividing the weights by their common factor, which changes neither the
  floors nor the order of the remainders), exact Python ints in numpy arrays otherwise;
* the DuckDB 128-bit query (:func:`_split`, below), kept for lines numpy declines
  (weights summing past 2**124), which falls back to the reference past 128 bits.

All three give the same shares (the tests compare them). ``decimal(38, 9)`` columns are moved in
and out of nano-units by reinterpreting the 128-bit buffer, never through Python
``Decimal`` objects: that conversion was most of the cost of the split.
"""

from __future__ import annotations

from decimal import Decimal

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tenantry.schemas import QUANTITY

NANO = 10**9
_I63 = 2**63 - 1


def split_exact(amount: Decimal, weights: list[int], keys: list[str], unit: Decimal = Decimal("1e-9")) -> list[Decimal]:
    """The reference split (pure Python integers); the vectorized paths compute exactly the same."""
    if not weights or any(w < 0 for w in weights) or sum(weights) == 0:
        raise ValueError("weights must be non-negative with a positive sum")
    # integer ratios are exact at any size (Decimal arithmetic would round at the context's 28 digits)
    a = nanos(amount.copy_abs())  # copy_abs: abs() would round to the context precision
    u = nanos(unit)
    units, dust = divmod(a, u)
    total = sum(weights)
    base = [units * w // total for w in weights]
    rem = [units * w % total for w in weights]
    left = units - sum(base)
    order = sorted(range(len(weights)), key=lambda i: (-rem[i], -weights[i], keys[i]))
    out = list(base)
    for rank, i in enumerate(order):
        out[i] = (base[i] + (1 if rank < left else 0)) * u + (dust if rank == 0 else 0)
    sign = -1 if amount < 0 else 1
    return [Decimal(f"{sign * n}e-9") for n in out]


def nanos(d: Decimal) -> int:
    """``d`` in nano-units, exactly (truncating anything finer than 1e-9)."""
    num, den = d.as_integer_ratio()
    return num * NANO // den


def decimal_unscaled(col: pa.Array | pa.ChunkedArray) -> np.ndarray | None:
    """The unscaled integers of a non-null ``decimal128`` column: ``int64`` when they all fit,
    else Python ints (object array, exact at any size); None if it has nulls."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if arr.null_count:
        return None
    n = len(arr)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    words = np.frombuffer(arr.buffers()[1], dtype=np.int64, count=2 * (arr.offset + n))[2 * arr.offset:]
    lo, hi = words[0::2], words[1::2]
    # little-endian two's complement: the value fits int64 iff the high word is the low word's sign
    if np.array_equal(hi, lo >> 63):
        return lo.copy()
    return hi.astype(object) * 2**64 + lo.view(np.uint64).astype(object)


def unscaled_to_decimal(values: np.ndarray, type_: pa.DataType) -> pa.Array:
    """Unscaled integers (``int64`` or Python ints that fit 128 bits) as a ``decimal128`` array,
    built from the raw words: no arithmetic, no Decimal objects."""
    words = np.empty(2 * len(values), dtype=np.int64)
    if values.dtype == object:
        lo = values & (2**64 - 1)
        words[0::2] = lo.astype(np.uint64).view(np.int64)
        words[1::2] = (values >> 64).astype(np.int64)
    else:
        values = np.ascontiguousarray(values, dtype=np.int64)
        words[0::2] = values
        words[1::2] = values >> 63
    return pa.Array.from_buffers(type_, len(values), [None, pa.py_buffer(words)])


def _limbs(v: np.ndarray) -> list[np.ndarray]:
    """Sort keys equivalent to ``v`` (non-negative, below 2**124), most significant last."""
    if v.dtype != object:
        return [v]
    return [(v & (2**62 - 1)).astype(np.int64), (v >> 62).astype(np.int64)]


def _tenant_codes(col: pa.ChunkedArray) -> np.ndarray:
    """Integer codes ordered like the tenant ids (binary order; null first, as never happens)."""
    enc = col.combine_chunks().dictionary_encode()
    rank = np.empty(len(enc.dictionary), dtype=np.int64)
    rank[np.asarray(pc.array_sort_indices(enc.dictionary))] = np.arange(len(enc.dictionary))
    idx = enc.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    return np.where(idx < 0, -1, rank[np.maximum(idx, 0)])


def split_units(line: np.ndarray, amount: np.ndarray, weight: np.ndarray, tenant: pa.ChunkedArray,
                unit: int) -> np.ndarray | None:
    """Signed share amounts in nano-units for share rows (``line`` index, the line's ``amount`` in
    nanos, ``weight``), in the input order; None if a weight is negative or a line's weights sum
    to 2**124 or more (the caller's general path then reports or handles it).

    Runs in ``int64`` when every product fits 63 bits, else in exact Python ints held by numpy
    (about 10x slower per row, still vectorized over lines).
    """
    n = len(line)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if weight.min() < 0:
        return None
    g = int(np.gcd.reduce(weight))
    if g == 0:
        return None
    # a common factor of all weights changes neither the floors nor the order of the remainders
    w = weight // g if g > 1 else weight.copy()
    order = np.argsort(line)  # grouping only: order inside a line is decided by _ranks
    ls = line[order]
    starts = np.flatnonzero(np.r_[True, ls[1:] != ls[:-1]])
    sizes = np.diff(np.r_[starts, n])
    wmax, amax = int(w.max()), int(np.abs(amount).max())
    wide = amax // unit * wmax > _I63 or wmax * int(sizes.max()) > _I63 or amax >= _I63
    if wide:
        w, amount = w.astype(object), amount.astype(object)
    ws = w[order]
    total = np.add.reduceat(ws, starts)
    if total.min() <= 0 or int(total.max()) >= 2**124:
        return None
    a = amount[order][starts]
    mag = np.abs(a)
    units, dust = mag // unit, mag % unit
    units_r, total_r = np.repeat(units, sizes), np.repeat(total, sizes)
    base = units_r * ws // total_r
    rem = units_r * ws % total_r
    leftover = units - np.add.reduceat(base, starts)
    rank = _ranks(ls, starts, sizes, rem, ws, tenant, order)
    share = (base + (rank < np.repeat(leftover, sizes))) * unit + np.where(rank == 0, np.repeat(dust, sizes), 0)
    share = np.where(np.repeat(a, sizes) < 0, -share, share)
    out = np.empty(n, dtype=share.dtype)
    out[order] = share
    return out


def _ranks(ls: np.ndarray, starts: np.ndarray, sizes: np.ndarray, rem: np.ndarray, ws: np.ndarray,
           tenant: pa.ChunkedArray, order: np.ndarray) -> np.ndarray:
    """Each row's rank inside its line (rows grouped by line): largest remainder first, then the
    larger weight, then the smaller tenant id.

    One sort on (line, remainder) packed in an int64 when it fits; only the lines where two
    remainders tie are sorted again on every key (a 5-key lexsort of all rows was most of the split).
    """
    n = len(ls)
    group_start = np.repeat(starts, sizes)
    rank = np.empty(n, dtype=np.int64)
    rmax = int(rem.max()) if n else 0
    if rem.dtype != object and (int(ls[-1]) + 1) * (rmax + 1) <= _I63:
        packed = ls * (rmax + 1) + (rmax - rem)
        by_rem = np.argsort(packed)  # equal keys are re-ranked below, so no need for stable
        rank[by_rem] = np.arange(n) - group_start
        p = packed[by_rem]
        tie = np.flatnonzero(p[1:] == p[:-1])
        if len(tie) == 0:
            return rank
        tied_lines = np.unique(ls[by_rem][tie])
        sub = np.flatnonzero(np.isin(ls, tied_lines))
        primary = [packed[sub]]  # (line, remainder) is still one key
    else:
        sub = np.arange(n)
        primary = [-k for k in _limbs(rem)] + [ls]
    # full keys for the lines that need them (sub keeps rows grouped by line, in line order)
    ls_s = ls[sub]
    sub_starts = np.flatnonzero(np.r_[True, ls_s[1:] != ls_s[:-1]])
    keys = [_tenant_codes(tenant.take(pa.array(order[sub])))] + [-k for k in _limbs(ws[sub])] + primary
    rank_order = np.lexsort(keys)
    sub_rank = np.empty(len(sub), dtype=np.int64)
    sub_rank[rank_order] = np.arange(len(sub)) - np.repeat(sub_starts, np.diff(np.r_[sub_starts, len(sub)]))
    rank[sub] = sub_rank
    return rank


# -- the split of a shares table (the DuckDB 128-bit query behind numpy) ----------------------------------------------------------------------------


# per-line sums by group-by on the integer line index and one window for the ranking: windows
# partitioned by a string id were the slow part
_SPLIT_SQL = """
with w as (
    select * replace (weight::hugeint as weight) from shares
),
t as (
    select _i, sum(weight) as w_total, any_value(amount) as amount from w group by _i
),
u as (
    select _i, w_total, amount < 0 as neg,
           (abs(amount) * 1000000000)::hugeint // $unit as units,
           (abs(amount) * 1000000000)::hugeint % $unit as dust
    from t
),
b as (
    select w.* exclude (amount), u.neg, u.units, u.dust,
           u.units * w.weight // u.w_total as base, u.units * w.weight % u.w_total as rem
    from w join u using (_i)
),
l as (
    select _i, any_value(units) - sum(base) as leftover from b group by _i
),
r as (
    select b.*, l.leftover,
           row_number() over (partition by b._i order by b.rem desc, b.weight desc, b.tenant_id) as rnk
    from b join l using (_i)
)
select line_id, day, service, currency, method, rule, driver, driver_quantity, tenant_id,
       (case when neg then -1 else 1 end
        * ((base + case when rnk <= leftover then 1 else 0 end) * $unit + case when rnk = 1 then dust else 0 end)
       )::decimal(38, 0) * 0.000000001::decimal(38, 9) as amount
from r
"""

_SHARE_COLS = ["line_id", "day", "service", "currency", "method", "rule", "driver", "driver_quantity", "tenant_id", "amount"]
_ROW_COLS = _SHARE_COLS + ["reason"]


def _split(con: duckdb.DuckDBPyConnection, shares: pa.Table, unit: Decimal) -> pa.Table:
    if shares.num_rows == 0:
        return _empty_rows()
    fast = _split_numpy(shares, unit)
    if fast is not None:
        return fast
    con.register("shares", shares)
    try:
        out = con.sql(_SPLIT_SQL, params={"unit": nanos(unit)}).to_arrow_table().select(_SHARE_COLS)
        return out.append_column("reason", pa.nulls(out.num_rows, pa.string())).cast(_rows_schema())
    except duckdb.OutOfRangeException:
        return _split_python(shares, unit)  # a product past 128 bits: same algorithm, big ints
    finally:
        con.unregister("shares")


def _split_numpy(shares: pa.Table, unit: Decimal) -> pa.Table | None:
    """The split in numpy (see :func:`split_units`); None when it declines (then DuckDB's 128 bits)."""
    amount = decimal_unscaled(shares.column("amount"))
    weight = decimal_unscaled(shares.column("weight"))
    if amount is None or weight is None:
        return None
    line = shares.column("_i").to_numpy()
    got = split_units(line, amount, weight, shares.column("tenant_id"), nanos(unit))
    if got is None:
        return None
    out = shares.select(_SHARE_COLS[:-1]).append_column("amount", unscaled_to_decimal(got, QUANTITY))
    return out.append_column("reason", pa.nulls(out.num_rows, pa.string())).cast(_rows_schema())


def _split_python(shares: pa.Table, unit: Decimal) -> pa.Table:
    rows = shares.to_pylist()
    by_line: dict[str, list[dict]] = {}
    for r in rows:
        by_line.setdefault(r["line_id"], []).append(r)
    out = []
    for group in by_line.values():
        amounts = split_exact(group[0]["amount"], [int(r["weight"]) for r in group],
                              [r["tenant_id"] for r in group], unit)
        for r, a in zip(group, amounts):
            out.append({**{k: r[k] for k in _SHARE_COLS}, "amount": a, "reason": None})
    return _rows_table(out)


def _rows_schema() -> pa.Schema:
    return pa.schema([("line_id", pa.string()), ("day", pa.date32()), ("service", pa.string()),
                      ("currency", pa.string()), ("method", pa.string()), ("rule", pa.string()),
                      ("driver", pa.string()), ("driver_quantity", QUANTITY), ("tenant_id", pa.string()),
                      ("amount", QUANTITY), ("reason", pa.string())])


def _empty_rows() -> pa.Table:
    return _rows_schema().empty_table()


def _rows_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=_rows_schema())
