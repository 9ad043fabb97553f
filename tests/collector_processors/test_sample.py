import secrets

import pyarrow as pa
import pytest

from collector_processors.base import ProcessorConfigError
from collector_processors.sample import Sample, trace_hash

from conftest import assert_accounted, make_batch


def _spans(n, tier="free", traces=None, **extra):
    traces = traces or [secrets.token_hex(16) for _ in range(n)]
    return make_batch("spans", [{"tier": tier, "trace_id": traces[i % len(traces)], **extra} for i in range(n)])


def test_other_tables_pass_through(table):
    if table == "spans":
        pytest.skip("spans are sampled")
    batch = make_batch(table, [{}] * 5)
    res = Sample(options={"default_percent": 0}).process(table, batch)
    assert res.kept.num_rows == 5 and res.sampled_out == 0


def test_keeps_about_p_percent_and_reweights():
    res = Sample(options={"tiers": {"free": 10}}).process("spans", _spans(4000))
    assert 300 < res.kept.num_rows < 500
    assert set(res.kept.column("sample_weight").to_pylist()) == {10.0}
    assert_accounted(res, 4000)
    assert res.stats[("acme", "sample", "sampled_out")] == res.sampled_out


def test_weighted_count_estimates_the_total():
    res = Sample(options={"tiers": {"free": 25}}).process("spans", _spans(20000))
    assert abs(sum(res.kept.column("sample_weight").to_pylist()) - 20000) < 1500


def test_whole_traces_are_kept_or_dropped_together():
    traces = [secrets.token_hex(16) for _ in range(200)]
    res = Sample(options={"tiers": {"free": 50}}).process("spans", _spans(2000, traces=traces))
    kept = pa.compute.value_counts(res.kept.column("trace_id")).to_pylist()
    assert all(v["counts"] == 10 for v in kept)


def test_decision_is_deterministic_and_nested_across_rates():
    batch = _spans(2000)
    a = set(Sample(options={"tiers": {"free": 10}}).process("spans", batch).kept.column("trace_id").to_pylist())
    b = set(Sample(options={"tiers": {"free": 10}}).process("spans", batch).kept.column("trace_id").to_pylist())
    c = set(Sample(options={"tiers": {"free": 50}}).process("spans", batch).kept.column("trace_id").to_pylist())
    assert a == b and a <= c


def test_errors_and_slow_spans_are_always_kept_with_weight_one():
    batch = pa.concat_tables([_spans(50, status_code="error"), _spans(50, duration_ms=5000.0)])
    res = Sample(options={"tiers": {"free": 0}}).process("spans", batch)
    assert res.kept.num_rows == 100 and set(res.kept.column("sample_weight").to_pylist()) == {1.0}


def test_tiers_get_their_own_rate():
    batch = pa.concat_tables([_spans(1000, tier="free"), _spans(1000, tier="enterprise"), _spans(1000, tier=None)])
    res = Sample(options={"tiers": {"free": 0, "enterprise": 100}, "default_percent": 100}).process("spans", batch)
    assert res.kept.num_rows == 2000 and res.sampled_out == 1000


def test_weights_multiply_with_upstream_sampling():
    res = Sample(options={"tiers": {"free": 50}}).process("spans", _spans(200, sample_weight=4.0))
    assert set(res.kept.column("sample_weight").to_pylist()) == {8.0}


def test_malformed_trace_ids_are_kept_unsampled():
    batch = _spans(4, traces=["acme'; DROP TABLE spans;--", "<script>", "X" * 32, "ab"])
    res = Sample(options={"tiers": {"free": 0}}).process("spans", batch)
    assert res.kept.num_rows == 4 and res.sampled_out == 0


def test_trace_hash_reads_the_low_56_bits():
    h, ok = trace_hash(pa.array(["0" * 18 + "f" * 14, "f" * 18 + "0" * 14, None, "nothex" * 6]))
    assert h[0] == 2**56 - 1 and h[1] == 0 and list(ok) == [True, True, False, False]
    sliced = trace_hash(pa.array(["a" * 32, "0" * 31 + "1"]).slice(1))
    assert sliced[0][0] == 1


def test_empty_batch():
    res = Sample().process("spans", make_batch("spans", []))
    assert res.kept.num_rows == 0 and res.sampled_out == 0


@pytest.mark.parametrize("options,message", [
    ({"tiers": {"free": 150}}, "tiers: free: expected a percent between 0 and 100"),
    ({"default_percent": -1}, "default_percent"),
    ({"slow_ms": "fast"}, "slow_ms"),
])
def test_bad_config_names_the_key(options, message):
    with pytest.raises(ProcessorConfigError, match=message):
        Sample(options=options)


def test_trace_hash_reads_only_32_lower_case_hex_digits_on_slices():
    import re

    import pyarrow as pa

    from collector_processors.sample import trace_hash

    ids = ["0123456789abcdef0123456789abcdef", "0123456789ABCDEF0123456789abcdef", None, "", "x" * 32,
           "0" * 30 + "é", "-" + "0" * 31, "0" * 31 + "/", "0" * 31 + "g", "0" * 31 + "`", "f" * 32, "0" * 33,
           "'; DROP TABLE spans;--" + "0" * 10]
    arr = pa.array(["pad"] + ids).slice(1)
    h, ok = trace_hash(arr)
    want = [bool(t is not None and re.fullmatch(r"[0-9a-f]{32}", t)) for t in ids]
    assert ok.tolist() == want
    assert [int(x) for x in h[ok]] == [int(t[18:], 16) for t, w in zip(ids, want) if w]
