"""tenantry.otlp.attrs: the numpy attribute decoder agrees with upb on every value, or reports why not."""

from __future__ import annotations

import random

import numpy as np
import pytest
from test_otlp_builders import kv

from tenantry.otlp import attrs as A
from tenantry.otlp.anyvalue import decode_key_value


def random_value(rnd: random.Random):
    pick = rnd.randrange(10)
    if pick == 0:
        return rnd.choice([True, False])
    if pick == 1:
        return rnd.choice([0, 1, -1, 127, 128, 2**31, -(2**63), 2**63 - 1, rnd.randrange(-10**12, 10**12)])
    if pick == 2:
        return rnd.choice([0.0, -0.0, 0.1, 1e300, -2.5e-300, float("inf"), float("nan"), rnd.random()])
    if pick == 3:
        return bytes(rnd.randrange(256) for _ in range(rnd.randrange(5)))
    if pick == 4:
        return [rnd.choice(["a", 1, True]) for _ in range(rnd.randrange(3))]
    if pick == 5:
        return {"k": rnd.choice(["v", 2])}
    if pick == 6:
        return None
    return "".join(rnd.choice("abcé🙂\x00'\";") for _ in range(rnd.choice([0, 1, 5, 127, 128, 300, 20000])))


def lists_of(rnd: random.Random, n: int):
    return [[kv(f"k{j}" * rnd.choice([1, 1, 50]), random_value(rnd)).SerializeToString()
             for j in range(rnd.randrange(6))] for _ in range(n)]


def expected(lists):
    out = []
    for raw_list in lists:
        d = {}
        for raw in raw_list:
            k, v = decode_key_value(raw)
            d.pop(k, None)
            d[k] = v
        out.append(d)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_vectorized_decoder_matches_upb_on_random_attributes(seed):
    rnd = random.Random(seed)
    lists = lists_of(rnd, 300)
    cols = A.decode_attribute_lists(lists)
    assert not cols.bad
    got = [dict(m) if m is not None else {} for m in cols.attributes.to_pylist()]
    assert got == expected(lists)


def test_small_batches_use_the_upb_path_with_the_same_result():
    lists = [[kv("a", 1).SerializeToString(), kv("b", "x").SerializeToString()]]
    cols = A.decode_attribute_lists(lists)
    assert cols.attributes.to_pylist() == [[("a", "1"), ("b", "x")]]


def test_non_canonical_field_order_and_unknown_fields_fall_back_to_upb():
    value_first = b"\x12\x03\x0a\x01v" + b"\x0a\x01k"  # value before key
    with_unknown = kv("u", "w").SerializeToString() + b"\x18\x05"  # unknown varint field 3
    lists = [[value_first, with_unknown]] * 40
    cols = A.decode_attribute_lists(lists)
    assert cols.attributes.to_pylist()[0] == [("k", "v"), ("u", "w")] and not cols.bad


def test_invalid_utf8_and_truncated_attributes_are_reported_per_record():
    good = [kv("g", "ok").SerializeToString()]
    bad_utf8 = kv("k", "ab").SerializeToString()[:-2] + b"\xff\xfe"
    truncated = kv("k", "abcdef").SerializeToString()[:-3]
    lists = [good] * 30 + [[bad_utf8]] + [good] * 30 + [[truncated]]
    cols = A.decode_attribute_lists(lists)
    assert set(cols.bad) == {30, 61}
    assert "UTF-8" in cols.bad[30] and "raw KeyValue" in cols.bad[61]
    assert cols.attributes.to_pylist()[30] == [] and cols.attributes.to_pylist()[0] == [("g", "ok")]


def test_lookup_returns_one_value_per_record_or_null():
    lists = [[kv("tenant.id", f"t{i}").SerializeToString()] if i % 2 else [] for i in range(60)]
    cols = A.decode_attribute_lists(lists)
    got = cols.lookup("tenant.id").to_pylist()
    assert got == [f"t{i}" if i % 2 else None for i in range(60)]


def test_varint_decoder_handles_multi_byte_and_unterminated_values():
    data = np.frombuffer(b"\x96\x01\x7f\xff\xff\xff\xff\xff" + b"\0" * 16, np.uint8)
    val, size, ok = A._varint(data, np.array([0, 2]), 5)
    assert val[0] == 150 and size[0] == 2 and ok[0]
    assert val[1] == 127 and size[1] == 1 and ok[1]
    _, _, ok = A._varint(np.frombuffer(b"\xff" * 8 + b"\0", np.uint8), np.array([0]), 5)
    assert not ok[0]


def test_string_slices_gathered_in_order_or_not_give_the_same_strings():
    pool = np.frombuffer(b"abcdefghij" + bytes(16), np.uint8)
    for starts, lengths in (([0, 3, 3, 7], [3, 0, 4, 3]), ([7, 0, 3, 0], [3, 3, 4, 0]), ([0, 0], [2, 2])):
        out = A._gather_strings(pool, np.array(starts), np.array(lengths), None)
        assert out.to_pylist() == [bytes(pool[s:s + n]).decode() for s, n in zip(starts, lengths)]
    valid = np.array([True, False, True])
    out = A._gather_strings(pool, np.array([0, 0, 2]), np.array([2, 0, 3]), valid)
    assert out.to_pylist() == ["ab", None, "cde"]
