"""The C span decoder (tenantry/otlp/_fastspans.c): same tables as upb, or it defers.

``make test`` builds it in place and sets ``TENANTRY_REQUIRE_ACCELERATOR=1``, so these tests
cannot skip silently there.
"""

from __future__ import annotations

import math
import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from test_otlp_builders import T0, kv, trace_request

from tenantry.otlp import decode_request
from tenantry.otlp import spans as spans_mod
from tenantry.otlp.messages import LITE_CLASSES, SPAN_BYTES_REQUEST

fast = spans_mod._fastspans
if fast is None:
    if os.environ.get("TENANTRY_REQUIRE_ACCELERATOR") == "1":
        raise RuntimeError("TENANTRY_REQUIRE_ACCELERATOR=1 but tenantry.otlp._fastspans is not built")
    pytest.skip("the C accelerator is not built (python build_ext.py --inplace)", allow_module_level=True)


def span_bytes(req) -> list[bytes]:
    lite = SPAN_BYTES_REQUEST.FromString(req.SerializeToString())
    return [s for rs in lite.resource_spans for ss in rs.scope_spans for s in ss.spans]


def upb(body: bytes):
    return spans_mod.decode_spans(LITE_CLASSES["traces"].FromString(body), "b")


def c_path(body: bytes):
    """The C decoder's tables, asserting it answered (did not defer)."""
    assert fast.decode(span_bytes(SPAN_BYTES_REQUEST.FromString(body))) is not None
    return spans_mod.decode_span_bytes(body, "b")


def same(body: bytes):
    got, want = c_path(body), upb(body)
    assert got[0].equals(want[0]), (got[0].to_pydict(), want[0].to_pydict())
    assert got[1].equals(want[1])
    return got


DOUBLES = [0.0, -0.0, 1.0, 0.1, 1 / 3, 1e16, 1.5e-300, -2.5e300, math.inf, -math.inf, math.nan, 123456789.125]
INTS = [0, 1, -1, 2**63 - 1, -(2**63), 10**12, -42]


def test_every_scalar_attribute_type_renders_like_upb():
    specs = [{
        "name": ["", "GET /é", "🙂" * 30, "a\x00b"][i % 4],
        "trace_id": b"" if i % 5 == 0 else bytes([i % 256]) * 16,
        "parent_span_id": b"" if i % 3 else bytes([7, i % 256]) * 4,
        "kind": [0, 1, 2, 3, 4, 5, 6, 99][i % 8],
        "status": [(0, ""), (1, ""), (2, "boom ∂"), (7, "x"), (-3, "")][i % 5],
        "start": T0 + i, "end": T0 + i * 1_000_003,
        # tenant keys the C decoder looks up itself: set, empty, a number, no value, absent
        "attrs": {**({} if i % 5 == 4 else {"tenant.id": [f"t{i % 4}", "", 7, None][i % 5]}),
                  **({"tenant.tier": "gold"} if i % 3 == 0 else {}), "user.id": ["", "u1", True][i % 3],
                  "d": DOUBLES[i % len(DOUBLES)], "n": INTS[i % len(INTS)],
                  "b": i % 2 == 0, "s": "x" * (i % 300), "empty": "", "none": None, "ünï": "ç"},
    } for i in range(150)]
    out = same(trace_request(specs, resource={"tenant.tier": "pro", "tenant.id": "res"}, resources=2).SerializeToString())
    spans = out[0]
    assert spans.num_rows == 300
    assert spans.column("tenant_id").to_pylist()[:5] == ["t0", "res", "7", "res", "res"]
    assert spans.column("tenant_tier").to_pylist()[:3] == ["gold", "pro", "pro"]
    first = dict(spans.column("attributes")[1].as_py())
    assert first["d"] == repr(DOUBLES[1]) and first["n"] == "1" and first["b"] == "false" and first["none"] is None
    assert spans.column("trace_id")[0].as_py() is None and spans.column("trace_id")[1].as_py() == "01" * 16


def test_duplicate_keys_keep_the_last_occurrence_in_order():
    req = trace_request([{"attrs": {"a": "1", "tenant.id": "acme"}}] * 3)
    for s in req.resource_spans[0].scope_spans[0].spans:
        s.attributes.extend([kv("a", "2"), kv("z", 5), kv("a", "3")])
    out = same(req.SerializeToString())
    assert out[0].column("attributes")[0].as_py() == [("tenant.id", "acme"), ("z", "5"), ("a", "3")]


def test_timestamps_past_int64_quarantine_the_span_like_upb():
    specs = [{"start": 2**64 - 1 if i == 3 else T0, "attrs": {"tenant.id": "t"}} for i in range(10)]
    out = same(trace_request(specs).SerializeToString())
    assert out[0].num_rows == 9 and out[1].num_rows == 1


def _replace_span(req, i: int, raw: bytes) -> bytes:
    lite = SPAN_BYTES_REQUEST.FromString(req.SerializeToString())
    spans = lite.resource_spans[0].scope_spans[0].spans
    spans[i] = raw
    return lite.SerializeToString()


@pytest.mark.parametrize("case", [
    "list attribute", "kvlist attribute", "bytes attribute", "key-only attribute",
    "invalid utf-8 name", "invalid utf-8 key", "invalid utf-8 value", "invalid utf-8 in a dropped duplicate",
    "wrong wire type", "truncated", "too many attributes",
])
def test_the_c_decoder_defers_on_what_it_does_not_decode_exactly(case):
    req = trace_request([{"attrs": {"tenant.id": f"t{i}", "k": "v"}} for i in range(20)])
    s = req.resource_spans[0].scope_spans[0].spans[5]
    if case == "list attribute":
        s.attributes.append(kv("l", [1, 2]))
    elif case == "kvlist attribute":
        s.attributes.append(kv("m", {"x": 1}))
    elif case == "bytes attribute":
        s.attributes.append(kv("raw", b"\x00\xff"))
    elif case == "key-only attribute":
        s.attributes.append(KeyValue(key="only"))
    elif case == "too many attributes":
        s.attributes.extend(kv(f"a{j}", j) for j in range(300))
    body = req.SerializeToString()
    raw = span_bytes(req)[5]
    if case == "invalid utf-8 name":
        body = _replace_span(req, 5, raw.replace(b"op-5", b"op\xff5"))
    elif case == "invalid utf-8 key":
        body = _replace_span(req, 5, raw.replace(b"tenant.id", b"tenant\xc0id"))
    elif case == "invalid utf-8 value":
        body = _replace_span(req, 5, raw.replace(b"\x01v", b"\x01\xed"))
    elif case == "invalid utf-8 in a dropped duplicate":
        bad = KeyValue(key="k", value=AnyValue(string_value="w")).SerializeToString().replace(b"\x01w", b"\x01\xff")
        body = _replace_span(req, 5, b"\x4a" + bytes([len(bad)]) + bad + raw)  # field 9 first: overridden by "k"
    elif case == "wrong wire type":
        body = _replace_span(req, 5, raw + b"\x35\x00\x00\x00\x00")  # kind (6) as fixed32
    elif case == "truncated":
        body = _replace_span(req, 5, raw[:-3])
    assert fast.decode(span_bytes(SPAN_BYTES_REQUEST.FromString(body))) is None
    got = decoded_like_upb(body)
    if got is not None:
        assert got["spans"].num_rows + got["quarantine"].num_rows == 20


def decoded_like_upb(body: bytes):
    """decode_request's tables, asserted equal to upb's; None when upb refuses the whole request
    (decode_request then gives one quarantine row for it, also asserted)."""
    got = decode_request("traces", body, "b")
    try:
        want = upb(body)
    except Exception:  # noqa: BLE001 - upb refuses the whole request: one quarantine row says so
        assert got["spans"].num_rows == 0 and got["quarantine"].column("table").to_pylist() == ["request"]
        return None
    assert got["spans"].equals(want[0]) and got["quarantine"].equals(want[1])
    return got


def corruptions(body: bytes, rnd: random.Random, n: int = 300):
    """``n`` copies of ``body``, each with one to three random bytes overwritten."""
    for _ in range(n):
        m = bytearray(body)
        for _ in range(rnd.randrange(1, 4)):
            m[rnd.randrange(len(m))] = rnd.randrange(256)
        yield bytes(m)


def test_random_corruption_agrees_with_upb_whenever_c_answers():
    rnd = random.Random(11)
    body = trace_request([{"attrs": {"tenant.id": f"t{i}", "n": i, "d": i / 3, "s": "v" * (i % 40)},
                           "status": (2, "e") if i % 7 == 0 else (0, "")} for i in range(40)]).SerializeToString()
    answered = 0
    for m in corruptions(body, rnd):
        try:
            lite = SPAN_BYTES_REQUEST.FromString(m)
        except Exception:  # noqa: BLE001 - upb refuses the request: nothing reaches the span decoder
            continue
        if fast.decode(span_bytes(lite)) is None:
            continue
        answered += 1
        try:
            want = upb(m)
        except Exception:  # noqa: BLE001 - upb refuses what the lite class accepted: decode_request quarantines
            continue
        got = spans_mod.decode_span_bytes(m, "b")
        assert got[0].equals(want[0]) and got[1].equals(want[1])
    assert answered > 50


def test_hostile_lists_and_sizes():
    with pytest.raises(TypeError):
        fast.decode(["not bytes"])
    with pytest.raises(TypeError):
        fast.decode(b"not a list")
    assert fast.decode([]) is not None  # nothing to decode is an empty answer
    assert fast.decode([b"\x0a\xff\xff\xff\xff\x0f"]) is None  # a length past the message
    assert fast.decode([b"\x80" * 20]) is None  # an unterminated tag varint
    assert fast.decode([b"\x0b"]) is None  # a group (wire type 3)
    huge = trace_request([{"attrs": {"tenant.id": "t", "s": "x" * 2_000_000}}] * 3)
    out = same(huge.SerializeToString())
    assert out[0].num_rows == 3


_text = st.text(max_size=12)
_value = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False), _text)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.fixed_dictionaries({
    "name": _text,
    "kind": st.integers(0, 7),
    "status": st.tuples(st.integers(0, 3), _text),
    "start": st.integers(0, 2**63 - 1),
    "end": st.integers(0, 2**63 - 1),
    "trace_id": st.binary(max_size=16),
    "attrs": st.dictionaries(_text, _value, max_size=6),
}), min_size=1, max_size=30))
def test_generated_spans_decode_like_upb(specs):
    body = trace_request(specs).SerializeToString()
    got, want = decode_request("traces", body, "b"), upb(body)
    assert got["spans"].equals(want[0]) and got["quarantine"].equals(want[1])
    if all(k for s in specs for k in s["attrs"]):  # an empty key is not canonical: C defers on it
        assert fast.decode(span_bytes(trace_request(specs))) is not None


# -- log records (decode_logs: the C twin of tenantry.otlp.logs' upb path) ------------------------

from test_otlp_builders import log_request, usage_record  # noqa: E402

from tenantry.otlp import logs as logs_mod  # noqa: E402
from tenantry.otlp.messages import LOG_BYTES_REQUEST  # noqa: E402


def log_bytes(body: bytes) -> list[bytes]:
    lite = LOG_BYTES_REQUEST.FromString(body)
    return [r for rl in lite.resource_logs for sl in rl.scope_logs for r in sl.log_records]


def same_logs(body: bytes, expect_c: bool = True):
    if expect_c:
        assert fast.decode_logs(log_bytes(body)) is not None
    got = logs_mod.decode_log_bytes(body, "b")
    want = logs_mod.decode_logs(LITE_CLASSES["logs"].FromString(body), "b")
    if expect_c:
        assert got is not None
    if got is not None:
        for g, w in zip(got, want):
            assert g.equals(w), (g.to_pydict(), w.to_pydict())
    return want


def test_log_records_decode_like_upb():
    bodies = [None, "", "text é", True, False, 42, -(2**63), 0.1, math.inf, math.nan]
    records = [{
        "time": [T0 + i, 0, 2**64 - 1][i % 3 if i % 7 == 0 else 0], "observed": T0 + 5 + i,
        "severity": [0, 9, 17, 24, 99, -5][i % 6], "severity_text": ["", "INFO", "WARN ∂"][i % 3],
        **({"body": bodies[i % len(bodies)]} if i % 11 else {}),
        "event_name": ["", "app.event", "tenantry.usage"][i % 3] if i % 4 else "",
        "trace_id": bytes([i % 256]) * 16 if i % 2 else b"", "span_id": bytes([i % 256]) * 8 if i % 3 else b"",
        "attrs": {**({"tenant.id": [f"t{i % 3}", "", 5][i % 3]} if i % 5 else {}), "n": i, "d": i / 7,
                  "event.name": "tenantry.usage" if i % 9 == 0 else "other",
                  **usage_record(event_id=f"e{i}", quantity=str(i % 4), tenant=f"t{i % 3}")["attrs"]},
    } for i in range(120)]
    want = same_logs(log_request(records, resource={"tenant.id": "res", "tenant.tier": "pro"}).SerializeToString())
    assert want[0].num_rows > 0 and want[1].num_rows > 0 and want[2].num_rows > 0  # logs, usage, quarantine


def test_log_decoder_defers_on_what_it_does_not_decode_exactly():
    for body in ([1, 2], {"k": "v"}, b"\x00\xff"):
        req = log_request([{"body": body, "attrs": {"tenant.id": "t"}}] * 3)
        assert fast.decode_logs(log_bytes(req.SerializeToString())) is None
        same_logs(req.SerializeToString(), expect_c=False)
    req = log_request([{"body": "a", "attrs": {"tenant.id": "t"}}] * 3)
    raw = log_bytes(req.SerializeToString())[0]
    lite = LOG_BYTES_REQUEST.FromString(req.SerializeToString())
    records = lite.resource_logs[0].scope_logs[0].log_records
    for mutated in (raw + b"\x2a\x00",  # a second (empty) body: upb merges, C defers
                    raw + b"\x1a\x01\xff",  # severity_text not UTF-8
                    raw + b"\x11" + bytes(8)):  # severity (2) as fixed64
        records[0] = mutated
        body = lite.SerializeToString()
        assert fast.decode_logs(log_bytes(body)) is None
        got = decode_request("logs", body, "b")
        try:
            want = logs_mod.decode_logs(LITE_CLASSES["logs"].FromString(body), "b")
        except Exception:  # noqa: BLE001 - upb refuses it: the request is quarantined whole
            assert got["quarantine"].column("table").to_pylist() == ["request"]
            continue
        assert got["logs"].equals(want[0]) and got["usage_events"].equals(want[1])


def test_decode_request_uses_the_c_log_decoder_and_falls_back(monkeypatch):
    body = log_request([usage_record(event_id=f"e{i}") for i in range(5)]).SerializeToString()
    calls = []
    real = logs_mod.decode_logs
    monkeypatch.setattr("tenantry.otlp.decode.decode_logs", lambda *a: calls.append(1) or real(*a))
    out = decode_request("logs", body, "b")
    assert out["usage_events"].num_rows == 5 and not calls  # the C path answered
    monkeypatch.setattr(spans_mod, "_fastspans", None)
    assert decode_request("logs", body, "b")["usage_events"].equals(out["usage_events"]) and calls


# -- whole ScopeSpans (decode_scopes: upb stops at them, so no Python object per span) -------------

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402

from tenantry.otlp.messages import SCOPE_BYTES_REQUEST  # noqa: E402


def scope_blobs(body: bytes) -> list[bytes]:
    return [b for rs in SCOPE_BYTES_REQUEST.FromString(body).resource_spans for b in rs.scope_spans]


def span_path(body: bytes, ingest="b"):
    """The per-span C path (what decode_span_bytes did before the scope path)."""
    return spans_mod._decode_parsed(SPAN_BYTES_REQUEST.FromString(body), ingest)


def mixed_request() -> ExportTraceServiceRequest:
    """Three resources; scopes named, unnamed, absent, empty, with a schema URL and attributes."""
    req = ExportTraceServiceRequest()
    for r in range(3):
        req.resource_spans.add().CopyFrom(trace_request(
            [{"attrs": {"tenant.id": f"t{r}-{i}", "n": i}, "name": f"r{r}-op{i}"} for i in range(4 + r)],
            resource={"service.name": f"svc-{r}"}, scope=f"lib-{r}").resource_spans[0])
        rs = req.resource_spans[r]
        unnamed = rs.scope_spans.add()
        unnamed.scope.version = "1.0"
        unnamed.schema_url = "https://opentelemetry.io/schemas/1.21.0 ∂"
        unnamed.spans.add(name="unnamed-scope", trace_id=bytes(16), span_id=bytes(8))
        rs.scope_spans.add()  # a scope with no spans at all
        bare = rs.scope_spans.add()  # no scope message
        bare.spans.add(name="no-scope")
        named = rs.scope_spans[0]
        named.scope.attributes.extend([kv("scope.attr", "x")])
    return req


def test_scope_path_equals_the_span_path_and_upb():
    body = mixed_request().SerializeToString()
    assert fast.decode_scopes(scope_blobs(body), spans_mod._LOOKUP_BYTES) is not None
    got = spans_mod._decode_scopes(body, "b")
    want = span_path(body)
    assert got[0].equals(want[0]) and got[1].equals(want[1])
    assert got[0].equals(upb(body)[0])
    spans = got[0]
    assert spans.num_rows == 4 + 5 + 6 + 3 * 2
    assert spans.column("scope_name").to_pylist().count(None) == 6  # unnamed and bare scopes
    assert spans.column("service_name").to_pylist()[-1] == "svc-2"


def test_scope_path_skips_unknown_fields_like_upb():
    body = mixed_request().SerializeToString()
    lite = SCOPE_BYTES_REQUEST.FromString(body)
    blob = lite.resource_spans[1].scope_spans[0]
    lite.resource_spans[1].scope_spans[0] = b"\x28\x07" + blob + b"\x31" + bytes(8)  # fields 5 and 6: unknown
    body2 = lite.SerializeToString()
    got = spans_mod._decode_scopes(body2, "b")
    assert got is not None and got[0].equals(upb(body2)[0]) and got[0].equals(upb(body)[0])


@pytest.mark.parametrize("case", ["scope twice", "schema url not utf-8", "spans as varint", "scope as varint",
                                  "truncated span", "truncated scope spans", "bad scope message"])
def test_scope_path_defers_and_decode_request_still_agrees_with_upb(case):
    body = mixed_request().SerializeToString()
    lite = SCOPE_BYTES_REQUEST.FromString(body)
    blob = lite.resource_spans[0].scope_spans[0]
    one_span = span_bytes(trace_request([{"attrs": {"tenant.id": "t"}}]))[0]
    mutated = {
        "scope twice": blob + b"\x0a\x04\x0a\x02zz",  # upb merges the two scope messages: C defers
        "schema url not utf-8": blob + b"\x1a\x02\xc3\x28",
        "spans as varint": blob + b"\x10\x01",
        "scope as varint": blob + b"\x08\x01",
        "truncated span": blob[:-3],
        "truncated scope spans": blob + b"\x12\x10ab",
        "bad scope message": b"\x0a\x03\x0a\x05a" + b"\x12" + bytes([len(one_span)]) + one_span,  # name past its end
    }[case]
    lite.resource_spans[0].scope_spans[0] = mutated
    body2 = lite.SerializeToString()
    assert spans_mod._decode_scopes(body2, "b") is None
    got = decoded_like_upb(body2)
    if case == "scope twice":
        assert got["spans"].column("scope_name")[0].as_py() == "zz"


def test_a_span_the_c_decoder_defers_on_goes_to_numpy_without_a_second_c_pass(monkeypatch):
    req = mixed_request()
    req.resource_spans[1].scope_spans[0].spans[2].attributes.append(kv("list", [1, 2]))  # C defers on arrays
    body = req.SerializeToString()
    assert fast.decode_scopes(scope_blobs(body), spans_mod._LOOKUP_BYTES) is None  # a span, not a scope
    assert spans_mod._decode_scopes(body, "b") is spans_mod._SPAN_DEFERRED
    passes = []
    real = spans_mod._decode_c
    monkeypatch.setattr(spans_mod, "_decode_c", lambda items, decoder="decode": passes.append(decoder) or real(items, decoder))
    got = decoded_like_upb(body)
    assert passes == ["decode_scopes"] and got["spans"].num_rows == upb(body)[0].num_rows
    # a ScopeSpans message the scope pass does not take (a second scope): the per-span C pass does
    lite = SCOPE_BYTES_REQUEST.FromString(mixed_request().SerializeToString())
    lite.resource_spans[0].scope_spans[0] += b"\x0a\x04\x0a\x02zz"
    passes.clear()
    assert fast.decode_scopes(scope_blobs(lite.SerializeToString()), spans_mod._LOOKUP_BYTES) is False
    decoded_like_upb(lite.SerializeToString())
    assert passes == ["decode_scopes", "decode"]


def test_random_corruption_of_scope_spans_agrees_with_upb_whenever_c_answers():
    rnd = random.Random(5)
    body = mixed_request().SerializeToString()
    answered = 0
    for m in corruptions(body, rnd):
        got = spans_mod._decode_scopes(m, "b")
        if got is None or got is spans_mod._SPAN_DEFERRED:
            continue
        answered += 1
        try:
            want = upb(m)
        except Exception:  # noqa: BLE001 - upb refuses what the scope class accepted
            continue
        assert got[0].equals(want[0]) and got[1].equals(want[1])
    assert answered > 50


def test_many_bodies_decode_together_like_each_alone():
    bodies = [trace_request([{"attrs": {"tenant.id": f"t{b}-{i}"}} for i in range(b + 1)],
                            resources=1 + b % 2).SerializeToString() for b in range(6)]
    bodies.append(mixed_request().SerializeToString())
    ids = [f"batch-{b}" for b in range(len(bodies))]
    together = spans_mod.decode_span_bodies(bodies, ids)
    alone = [spans_mod.decode_span_bytes(b, i) for b, i in zip(bodies, ids)]
    import pyarrow as pa
    assert together[0].equals(pa.concat_tables([a[0] for a in alone]))
    assert together[0].column("ingest_batch").to_pylist()[-1] == "batch-6"


def test_top_counts_counts_resources_and_refuses_anything_else():
    bodies = [trace_request([{}], resources=r).SerializeToString() for r in (1, 3, 2)]
    import numpy as np
    assert np.frombuffer(fast.top_counts(bodies), np.int64).tolist() == [1, 3, 2]
    assert fast.top_counts([]) == b""
    assert fast.top_counts([b""]) == bytes(8)  # an empty request holds no resources
    assert fast.top_counts(bodies + [b"\x10\x01"]) is None  # another top-level field
    assert fast.top_counts([b"\x0a\xff\xff\xff\xff\x0f"]) is None  # a length past the body
    assert fast.top_counts([b"\x80" * 20]) is None
    with pytest.raises(TypeError):
        fast.top_counts(["text"])
    with pytest.raises(TypeError):
        fast.top_counts(b"not a list")
    with pytest.raises(TypeError):
        fast.decode_scopes([1])


# (non-empty keys: the C decoder defers on an empty one, and groups this small then go body by body)
_request = st.builds(lambda specs, res: trace_request(specs, resources=res).SerializeToString(),
                     st.lists(st.fixed_dictionaries({"name": _text, "attrs": st.dictionaries(
                         st.text(min_size=1, max_size=12), _value, max_size=4)}), min_size=1, max_size=5),
                     st.integers(1, 3))
# mostly requests; now and then an empty body or garbage (which sends the group body by body)
_body = st.one_of(_request, _request, _request, _request, st.just(b""), st.binary(max_size=40))


@settings(max_examples=80, deadline=None)
@given(st.lists(_body, min_size=1, max_size=6))
def test_bodies_decoded_together_equal_each_decoded_alone(bodies):
    import pyarrow as pa

    ids = [f"b{i}" for i in range(len(bodies))]
    together = spans_mod.decode_span_bodies(bodies, ids)
    if together is None:  # some body needs the per-body path: what decode_group then does
        return
    alone = [decode_request("traces", body, i) for body, i in zip(bodies, ids)]
    assert together[0].equals(pa.concat_tables([a["spans"] for a in alone]))
    assert together[1].num_rows == sum(a["quarantine"].num_rows for a in alone)
