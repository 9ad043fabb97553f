"""Security partials: attribute extraction, counters, evidence, and the Beam composite."""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to

from pipelines.transforms.partials import MergeFamilies
from pipelines.transforms.security import EVIDENCE_PER_GROUP, MERGERS, SecurityPartials, attribute_columns, security_partials
from tenantry import schemas
from tenantry.security import SecuritySettings
from tests.sql.test_sre_views import T0_NS, make_spans


def _rows(n, **kw):
    base = {"tenant": "a", "service": "api", "name": "GET /x", "duration_ms": 10.0}
    return [{**base, "start_ns": T0_NS + i * 10**9, **kw} for i in range(n)]


def _status(code):
    return {"http.response.status_code": str(code)}


def test_attribute_columns_handles_null_maps_duplicates_and_slices():
    maps = pa.array([[("a", "1"), ("b", "2")], None, [("a", "3"), ("a", "4")], [], [("b", "ü'")]], schemas.ATTRS)
    got = attribute_columns(maps, ["a", "b", "missing"])
    assert got["a"].to_pylist() == ["1", None, "4", None, None]  # the last duplicate wins
    assert got["b"].to_pylist() == ["2", None, None, None, "ü'"]
    assert got["missing"].null_count == 5
    sliced = attribute_columns(maps.slice(2), ["a", "b"])
    assert sliced["a"].to_pylist() == ["4", None, None] and sliced["b"].to_pylist() == [None, None, "ü'"]
    assert attribute_columns(maps.slice(0, 0), ["a"])["a"].to_pylist() == []


def test_status_codes_count_auth_failures_denials_and_rate_limits():
    spans = make_spans(_rows(3, attrs=_status(401)) + _rows(2, attrs=_status(403)) + _rows(4, attrs=_status(429))
                       + _rows(5, attrs=_status(200)) + _rows(1, attrs={"http.status_code": "401"}))
    counts, _events = security_partials(spans, SecuritySettings())
    got = {c: pc.sum(counts[c]).as_py() for c in ("requests", "auth_failures", "authz_denials", "rate_limited")}
    assert got == {"requests": 15, "auth_failures": 4, "authz_denials": 2, "rate_limited": 4}


def test_client_spans_with_401_are_not_counted_twice():
    spans = make_spans(_rows(1, attrs=_status(401)) + _rows(1, attrs=_status(401), kind="client"))
    counts, _ = security_partials(spans, SecuritySettings())
    assert pc.sum(counts["auth_failures"]).as_py() == 1


def test_configured_status_codes_and_auth_attribute():
    st = SecuritySettings(auth_failure_status_codes=(419,), auth_failure_attribute="auth.outcome",
                          auth_failure_values=("failure",))
    spans = make_spans(_rows(2, attrs=_status(419)) + _rows(1, attrs={"auth.outcome": "failure"})
                       + _rows(1, attrs=_status(401)))
    counts, _ = security_partials(spans, st)
    assert pc.sum(counts["auth_failures"]).as_py() == 3


def test_cross_tenant_and_mismatch_keep_every_span_as_evidence():
    spans = make_spans(_rows(2, attrs={"tenant.resource_owner": "b"}, trace_id="e" * 32)
                       + _rows(1, attrs={"tenant.resource_owner": "a"})  # own resource: fine
                       + _rows(1, attrs={"tenant.resource_owner": ""})  # empty: no claim
                       + _rows(1, kind="internal", attrs={"tenant.baggage_id": "z"}))
    counts, events = security_partials(spans, SecuritySettings())
    assert pc.sum(counts["cross_tenant_access"]).as_py() == 2 and pc.sum(counts["tenant_mismatch"]).as_py() == 1
    assert sorted(zip(events["kind"].to_pylist(), events["detail"].to_pylist())) == [
        ("cross_tenant_access", "b"), ("cross_tenant_access", "b"), ("tenant_mismatch", "z")]


def test_auth_evidence_is_capped_per_hour_and_tenant():
    spans = make_spans(_rows(50, attrs=_status(401)) + _rows(3, tenant="b", attrs=_status(401)))
    _, events = security_partials(spans, SecuritySettings())
    per_tenant = events.group_by("tenant_id").aggregate([("kind", "count")]).to_pylist()
    assert sorted((r["tenant_id"], r["kind_count"]) for r in per_tenant) == [("a", EVIDENCE_PER_GROUP), ("b", 3)]


def test_quiet_traffic_has_counters_but_no_evidence():
    counts, events = security_partials(make_spans(_rows(10, attrs=_status(200))), SecuritySettings())
    assert pc.sum(counts["requests"]).as_py() == 10 and events is None


def test_empty_batch():
    assert security_partials(schemas.empty("spans"), SecuritySettings()) == (None, None)


def test_beam_composite_merges_counts_and_concatenates_evidence():
    spans = make_spans(_rows(4, attrs={"tenant.resource_owner": "b"}) + _rows(4, attrs=_status(401)))
    with beam.Pipeline(runner=FnApiRunner()) as p:
        pairs = (p | beam.Create([("spans", "p0", spans.slice(0, 5)), ("spans", "p1", spans.slice(5))])
                 | SecurityPartials() | MergeFamilies(MERGERS))
        out = {n: pairs | f"Only{n}" >> beam.Filter(lambda kv, n=n: kv[0] == n) | f"T{n}" >> beam.Map(lambda kv: kv[1])
               for n in MERGERS}
        counts = out["security_hourly_partials"] | beam.Map(
            lambda t: (t.num_rows, pc.sum(t["cross_tenant_access"]).as_py(), pc.sum(t["auth_failures"]).as_py()))
        assert_that(counts, equal_to([(1, 4.0, 4.0)]))
        kinds = out["security_events"] | "Kinds" >> beam.Map(lambda t: sorted(t["kind"].to_pylist()))
        assert_that(kinds, equal_to([["auth_failure"] * 4 + ["cross_tenant_access"] * 4]), label="Evidence")


def test_span_partials_equal_the_sre_and_security_composites_run_apart():
    from pipelines.transforms.sre import sre_partials
    from pipelines.transforms.span_partials import SpanPartials
    from tenantry import synthetic

    spans = synthetic.spans(3_000, tenants=5, start_ns=T0_NS, hours=2)
    extra = make_spans(_rows(4, attrs={"tenant.resource_owner": "b"}) + _rows(3, attrs=_status(401))
                       + _rows(2, kind="internal", attrs={"tenant.baggage_id": "z"}))
    spans = pa.concat_tables([spans, extra.cast(spans.schema)])
    apart = {**sre_partials(spans)}
    apart["security_hourly_partials"], apart["security_events"] = security_partials(spans, SecuritySettings())
    with beam.Pipeline(runner=FnApiRunner()) as p:
        together = (p | beam.Create([("spans", "p0", spans)]) | SpanPartials()
                    | beam.Map(lambda c: (c[0], c[2].drop_columns(["ingest_batch"]))))
        assert_that(together | beam.Map(lambda kv: kv[0]), equal_to(list(apart)), label="Families")
        assert_that(together | "Same" >> beam.Map(lambda kv: kv[1].equals(apart[kv[0]])),
                    equal_to([True] * len(apart)), label="Equal")
