"""The vectorized split (int64 and wide Python-int paths) against the one-line reference."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pyarrow as pa
import pytest

from tenantry.cost.split import decimal_unscaled, nanos, split_exact, split_units, unscaled_to_decimal
from tenantry.schemas import QUANTITY


def run(lines: list[tuple[Decimal, list[int], list[str]]], unit: Decimal = Decimal("1e-9")) -> list[list[Decimal]]:
    """Split many lines at once (rows shuffled, as DuckDB may return them); shares per line, in key order."""
    rows = [(i, nanos(a), w, k) for i, (a, ws, ks) in enumerate(lines) for w, k in zip(ws, ks)]
    perm = np.random.default_rng(3).permutation(len(rows))
    rows = [rows[p] for p in perm]
    line = np.array([r[0] for r in rows], dtype=np.int64)
    amount = np.array([r[1] for r in rows], dtype=object)
    weight = np.array([r[2] for r in rows], dtype=object)
    # int64 when every value fits, as decimal_unscaled hands them over
    if all(-2**63 <= int(v) < 2**63 for v in [*amount, *weight]):
        amount, weight = amount.astype(np.int64), weight.astype(np.int64)
    got = split_units(line, amount, weight, pa.chunked_array([pa.array([r[3] for r in rows])]), nanos(unit))
    assert got is not None
    out: list[dict] = [{} for _ in lines]
    for r, g in zip(rows, got):
        out[r[0]][r[3]] = Decimal(f"{int(g)}e-9")
    return [[o[k] for k in ks] for o, (_, _, ks) in zip(out, lines)]


def test_int64_path_matches_the_reference_on_random_lines():
    rng = np.random.default_rng(11)
    lines = []
    for i in range(400):
        k = int(rng.integers(1, 8))
        ws = [int(x) for x in rng.integers(0, 5, k)]
        ws[0] += 1  # a positive total
        amount = Decimal(int(rng.integers(-10**12, 10**12))).scaleb(-9)
        lines.append((amount, ws, [f"t{j}" for j in rng.permutation(k)]))
    for unit in (Decimal("1e-9"), Decimal("0.01"), Decimal("1")):
        got = run(lines, unit)
        for (a, ws, ks), shares in zip(lines, got):
            assert shares == split_exact(a, ws, ks, unit)
            assert sum(shares) == a


def test_wide_path_matches_the_reference_past_64_bits():
    huge = Decimal("99999999999999999999.999999999")  # ~1e29 nanos: products need ~100 bits
    lines = [(huge, [10**20, 2 * 10**20 + 1], ["a", "b"]), (-huge, [3, 3, 3], ["z", "y", "x"]),
             (Decimal("0.000000001"), [10**30, 1], ["p", "q"])]
    got = run(lines)
    for (a, ws, ks), shares in zip(lines, got):
        assert shares == split_exact(a, ws, ks)


def test_ties_go_to_the_smaller_tenant_id_in_code_point_order_even_for_unicode():
    keys = ["ünïcode", "zeta", "Zeta", "'; drop table x; --", "ß"]
    a = Decimal("0.000000003")
    assert run([(a, [1] * 5, keys)])[0] == split_exact(a, [1] * 5, keys)


@pytest.mark.parametrize("weights", [[0, 0], [-1, 2]])
def test_no_positive_total_or_a_negative_weight_is_declined(weights):
    got = split_units(np.zeros(2, np.int64), np.array([5, 5]), np.array(weights), pa.chunked_array([["a", "b"]]), 1)
    assert got is None


def test_decimal_buffers_round_trip_at_both_widths_and_through_slices():
    values = [Decimal("0"), Decimal("-0.000000001"), Decimal("9223372036.854775807"),
              Decimal("-99999999999999999999999999999.999999999"), Decimal("12345678901234567890.5")]
    arr = pa.array(values, QUANTITY)
    for sl in (arr, arr.slice(1), arr.slice(0, 3), pa.chunked_array([arr.slice(0, 2), arr.slice(2)])):
        raw = decimal_unscaled(sl)
        want = sl.to_pylist()
        assert [int(v) for v in raw] == [nanos(d) for d in want]  # integers: Decimal would round at 28 digits
        assert unscaled_to_decimal(raw, QUANTITY).to_pylist() == want
    narrow = decimal_unscaled(arr.slice(0, 3))
    assert narrow.dtype == np.int64  # the fast path is taken when every value fits
    assert decimal_unscaled(pa.array([None], QUANTITY)) is None
