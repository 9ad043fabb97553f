"""The fast span decoders (tenantry.otlp.spans.decode_span_bytes: the C accelerator, and the numpy
decoder it defers to) agree with the upb path. Every test runs with and without the accelerator."""

from __future__ import annotations

import random

import pytest
from test_otlp_builders import T0, trace_request

from tenantry.otlp import decode_request
from tenantry.otlp.decode import record_count
from tenantry.otlp.messages import LITE_CLASSES, SPAN_BYTES_REQUEST
from tenantry.otlp import spans as spans_mod
from tenantry.otlp.spans import decode_span_bytes, decode_spans


@pytest.fixture(autouse=True, params=["c", "numpy"])
def decoder(request, monkeypatch):
    if request.param == "numpy":
        monkeypatch.setattr(spans_mod, "_fastspans", None)
    elif spans_mod._fastspans is None:
        pytest.skip("the C accelerator is not built (python build_ext.py --inplace)")
    return request.param


def decode(body: bytes, batch: str = "b-1"):
    return decode_request("traces", body, batch)


def total_rows(out) -> int:
    return sum(t.num_rows for t in out.values())


def _both_paths(req):
    body = req.SerializeToString()
    fast = decode_span_bytes(body, "b")
    slow = decode_spans(LITE_CLASSES["traces"].FromString(body), "b")
    return fast, slow


def test_numpy_span_decoder_matches_upb_on_varied_spans():
    specs = []
    for i in range(200):
        specs.append({
            "trace_id": bytes([i % 256]) * 16 if i % 5 else b"", "span_id": bytes([i % 256, 1]) * 4,
            "parent_span_id": b"" if i % 3 else b"\x09" * 8, "name": ["", "GET /é", "🙂" * 50][i % 3],
            "kind": [0, 1, 2, 3, 4, 5, 99][i % 7], "status": [(0, ""), (1, ""), (2, "bad ∂"), (7, "x")][i % 4],
            "start": [T0, 0, 2**64 - 1][i % 3 if i % 11 == 0 else 0], "end": T0 + i,
            "attrs": {"tenant.id": f"t{i % 4}", "n": i, "f": i / 7, "b": i % 2 == 0, "l": [i], "s": "x" * (i % 200)},
        })
    fast, slow = _both_paths(trace_request(specs, resource={"tenant.tier": "pro"}, resources=2))
    assert fast is not None
    assert fast[0].equals(slow[0]) and fast[1].equals(slow[1])
    assert fast[0].num_rows + fast[1].num_rows == 400 and fast[1].num_rows > 0


def test_numpy_span_decoder_defers_to_upb_when_unsure():
    req = trace_request([{"name": "x"}] * 100)
    body = req.SerializeToString()
    bad_name = body.replace(b"\x2a\x01x", b"\x2a\x01\xff")  # span name 'x' -> invalid UTF-8
    assert decode_span_bytes(bad_name, "b") is None
    out = decode(bad_name)  # upb refuses the whole request
    assert total_rows(out) == 1 and out["quarantine"].column("table")[0].as_py() == "request"
    small = decode_span_bytes(trace_request([{}] * 10).SerializeToString(), "b")
    if spans_mod._fastspans is None:
        assert small is None  # small: upb is cheaper than the numpy set-up
    else:
        assert small is not None and small[0].num_rows == 10  # the C decoder has no set-up cost


def test_random_byte_corruption_never_raises_and_every_span_is_accounted_for():
    rnd = random.Random(7)
    body = trace_request([{"attrs": {"tenant.id": f"t{i}", "n": i, "s": "v" * (i % 40)}} for i in range(80)]).SerializeToString()
    for _ in range(150):
        mutated = bytearray(body)
        for _ in range(rnd.randrange(1, 4)):
            mutated[rnd.randrange(len(mutated))] = rnd.randrange(256)
        mutated = bytes(mutated)
        out = decode(mutated)
        q = out["quarantine"]
        if q.num_rows == 1 and q.column("table")[0].as_py() == "request":
            assert out["spans"].num_rows == 0
            continue
        assert out["spans"].num_rows + q.num_rows == record_count("traces", mutated)
        fast = decode_span_bytes(mutated, "b-1")
        if fast is not None:  # when the numpy decoder answers, it agrees with upb
            slow = decode_spans(LITE_CLASSES["traces"].FromString(mutated), "b-1")
            assert fast[0].equals(slow[0]) and fast[1].equals(slow[1])


def test_out_of_range_enum_varints_are_read_like_upb():
    req = SPAN_BYTES_REQUEST.FromString(trace_request([{"kind": 2}] * 70).SerializeToString())
    spans = req.resource_spans[0].scope_spans[0].spans
    # kind 2 written as the varint 2**32 + 2: upb truncates enums to int32, so it is still "server"
    wide = [s.replace(b"\x30\x02", b"\x30\x82\x80\x80\x80\x10") for s in spans]
    del spans[:]
    spans.extend(wide)
    body = req.SerializeToString()
    fast = decode_span_bytes(body, "b")
    slow = decode_spans(LITE_CLASSES["traces"].FromString(body), "b")
    assert fast is not None and fast[0].equals(slow[0])
    assert set(fast[0].column("kind").to_pylist()) == {"server"}
