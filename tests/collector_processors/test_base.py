from collections import Counter

import pyarrow as pa

from collector_processors import maps
from collector_processors.base import Chain, Processor, Result, count_by_tenant, quarantine_rows, stats_table
from collector_processors.sample import Sample
from tenantry import schemas

from conftest import assert_accounted, make_batch


class Boom(Processor):
    type_name = "boom"

    def process(self, table, batch):
        raise RuntimeError("bug")


def test_chain_quarantines_rows_of_a_failing_processor(table, caplog):
    res = Chain([Boom()]).process(table, make_batch(table, [{}, {}]))
    assert res.kept.num_rows == 0
    assert res.quarantined.column("reason").to_pylist() == ["processor_error"] * 2
    assert res.stats[("acme", "boom", "quarantined:processor_error")] == 2
    assert "boom failed" in caplog.text


def test_chain_sums_sampled_out_and_accepts_record_batches():
    batch = make_batch("spans", [{"tier": "free"}] * 200)
    rb = batch.to_batches()[0]
    res = Chain([Sample(options={"tiers": {"free": 0}})]).process("spans", rb)
    assert res.sampled_out == 200 and res.kept.num_rows == 0
    assert_accounted(res, 200)


def test_result_default_sampled_out_is_zero():
    assert Result(schemas.empty("spans"), schemas.empty("quarantine")).sampled_out == 0


def test_quarantine_rows_survive_nanosecond_timestamps_and_unicode(table):
    batch = make_batch(table, [{"tenant": "acme", "attrs": {"k": "ünï ☃ <script>"}}])
    t = pa.array([1_700_000_000_123_456_789], schemas.TS)
    col = "start_time" if table == "spans" else "time"
    batch = batch.set_column(batch.schema.get_field_index(col), col, t)
    q = quarantine_rows(table, batch, schemas.Reason.MALFORMED_RECORD, "p", "d")
    assert "123456789" in q.column("raw")[0].as_py() and "☃" in q.column("raw")[0].as_py()


def test_stats_table_has_the_processor_stats_schema():
    t = stats_table(Counter({("acme", "p", "kept"): 3}), "spans", "b1")
    assert t.to_pylist() == [{"table": "spans", "tenant_id": "acme", "processor": "p", "outcome": "kept", "count": 3, "ingest_batch": "b1"}]


def test_count_by_tenant(table):
    c = count_by_tenant(make_batch(table, [{"tenant": "a"}, {"tenant": "a"}, {"tenant": "b"}]), "p", "kept")
    assert c == Counter({("a", "p", "kept"): 2, ("b", "p", "kept"): 1})


def test_map_entries_lookup_and_rebuild_on_slices():
    m = pa.array([[("a", "1"), ("b", "2"), ("a", "3")], None, [], [("a", "x")]], schemas.ATTRS)
    assert maps.lookup(m, "a").to_pylist() == ["1", None, None, "x"]
    e = maps.MapEntries.of(m.slice(1))
    assert e.num_rows == 3 and len(e) == 1 and e.lookup("a").to_pylist() == [None, None, "x"]
    full = maps.MapEntries.of(pa.chunked_array([m]))
    rebuilt = full.rebuild(keep=pa.array([True, False, True, True]))
    assert rebuilt.to_pylist() == [[("a", "1"), ("a", "3")], None, [], [("a", "x")]]


def test_match_any_handles_nulls_and_repeats():
    arr = pa.array(["a@b.io", None, "x", "a@b.io"] * 10)
    assert list(maps.match_any(arr, "@")[:4]) == [True, False, False, True]
    assert not maps.match_any(pa.nulls(3, pa.string()), "@").any()
