"""Allocation by hand-computed expectations; conservation checked on every line of every test."""

from __future__ import annotations

import datetime as dt
import decimal
from decimal import Decimal

import pyarrow as pa
import pytest
from conftest import DAY, focus_row, write_focus_csv

from tenantry.cost import allocate as A
from tenantry.cost import readers
from tenantry.cost import split as S
from tenantry.cost.drivers import DRIVER_SCHEMA
from tenantry.cost.rules import parse_cost
from tenantry.schemas import PLATFORM


def lines_from(tmp_path, rows, cfg) -> pa.Table:
    f = write_focus_csv(tmp_path / "focus.csv", rows)
    parsed = readers.parse(readers.CostFile(str(f), f.read_bytes()), cfg)
    t = parsed.lines
    return t.append_column("line_id", pa.array([f"L{i}" for i in range(t.num_rows)]))


def drivers(rows: list[tuple[str, str, str]], day: dt.date = DAY) -> pa.Table:
    return pa.Table.from_pylist([{"day": day, "tenant_id": t, "driver_key": k, "quantity": Decimal(q)}
                                 for t, k, q in rows], schema=DRIVER_SCHEMA)


def by_line(result) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for r in result.table.to_pylist():
        out.setdefault(r["line_id"], {})[r["tenant_id"] or f"-{r['reason']}"] = r["amount"]
    return out


def assert_conserved(lines: pa.Table, result) -> None:
    want = dict(zip(lines.column("line_id").to_pylist(), lines.column("amount").to_pylist()))
    got: dict[str, Decimal] = {}
    for r in result.table.to_pylist():
        got[r["line_id"]] = got.get(r["line_id"], Decimal(0)) + r["amount"]
    assert got == want  # every line, exactly: allocated + unallocated = input


REQ = [("acme", "requests", "30"), ("globex", "requests", "10"), ("__unattributed__", "requests", "10")]


def test_proportional_split_follows_the_driver_and_unattributed_share_is_unallocated(tmp_path):
    cfg = parse_cost({"rules": [{"name": "compute", "method": "proportional", "driver": "requests"}]})
    lines = lines_from(tmp_path, [focus_row("EC2", "10.00"), focus_row("EC2", "0.01")], cfg)
    res = A.allocate(lines, cfg, drivers(REQ))
    got = by_line(res)
    assert got["L0"] == {"acme": Decimal("6"), "globex": Decimal("2"), "-unattributed_usage": Decimal("2")}
    assert got["L1"] == {"acme": Decimal("0.006"), "globex": Decimal("0.002"), "-unattributed_usage": Decimal("0.002")}
    assert set(res.table.column("method").to_pylist()) == {"proportional", "unallocated"}
    assert set(res.table.column("driver").to_pylist()) == {"requests"}
    assert_conserved(lines, res)


def test_largest_remainder_in_cents_gives_the_leftover_cent_to_the_largest_remainder(tmp_path):
    cfg = parse_cost({"allocation_unit": "0.01",
                      "rules": [{"name": "p", "method": "proportional", "driver": "requests"}]})
    lines = lines_from(tmp_path, [focus_row("EC2", "1.00"), focus_row("EC2", "0.10")], cfg)
    # weights 2:1 → 1.00: 0.666.. / 0.333.. → units 66 (rem 2/3) and 33 (rem 1/3); leftover 1 → acme
    res = A.allocate(lines, cfg, drivers([("acme", "requests", "2"), ("globex", "requests", "1")]))
    got = by_line(res)
    assert got["L0"] == {"acme": Decimal("0.67"), "globex": Decimal("0.33")}
    assert got["L1"] == {"acme": Decimal("0.07"), "globex": Decimal("0.03")}
    assert_conserved(lines, res)


def test_sub_unit_dust_goes_to_the_first_ranked_share_so_the_line_still_adds_up(tmp_path):
    cfg = parse_cost({"allocation_unit": "0.01", "rules": [{"name": "e", "method": "even", "tenants": ["b", "a"]}]})
    lines = lines_from(tmp_path, [focus_row("S3", "0.015"), focus_row("S3", "0.004")], cfg)
    got = by_line(A.allocate(lines, cfg))
    # 0.015 = 1 cent + 0.005 dust; equal weights tie → tenant 'a' first: 0.01 + 0.005
    assert got["L0"] == {"a": Decimal("0.015"), "b": Decimal("0")}
    assert got["L1"] == {"a": Decimal("0.004"), "b": Decimal("0")}


def test_fixed_percentages_and_platform_share(tmp_path):
    cfg = parse_cost({"rules": [{"name": "support", "method": "fixed",
                                 "percentages": {"acme": "33.3333", "globex": "33.3333", PLATFORM: "33.3334"}}]})
    lines = lines_from(tmp_path, [focus_row("AWS Support", "100.00")], cfg)
    res = A.allocate(lines, cfg)
    assert by_line(res)["L0"] == {"acme": Decimal("33.3333"), "globex": Decimal("33.3333"), PLATFORM: Decimal("33.3334")}
    assert_conserved(lines, res)


def test_credits_split_like_charges_with_the_sign_kept(tmp_path):
    cfg = parse_cost({"rules": [{"name": "p", "method": "proportional", "driver": "requests"}]})
    lines = lines_from(tmp_path, [focus_row("EC2", "-1.000000001", category="Credit")], cfg)
    res = A.allocate(lines, cfg, drivers([("acme", "requests", "1"), ("globex", "requests", "1")]))
    # 1000000001 nanos over 1:1 → 500000001 (tie → acme) and 500000000
    assert by_line(res)["L0"] == {"acme": Decimal("-0.500000001"), "globex": Decimal("-0.5")}
    assert_conserved(lines, res)


def test_direct_tags_fail_closed_on_hostile_and_unknown_tenants(tmp_path):
    cfg = parse_cost({"rules": [{"name": "tagged", "method": "direct"}]})
    hostile = "x'; drop table spans; --"
    rows = [focus_row("S3", "1.5", tags={"tenant": "acme"}), focus_row("S3", "2", tags={"tenant": hostile}),
            focus_row("S3", "3", tags={"tenant": "stranger"}), focus_row("S3", "4", tags={"user:tenant": "globex"}),
            focus_row("S3", "5", tags={"tenant": "__unattributed__"}), focus_row("S3", "6")]
    lines = lines_from(tmp_path, rows, cfg)
    res = A.allocate(lines, cfg, catalog=["acme", "globex"])
    got = by_line(res)
    assert got["L0"] == {"acme": Decimal("1.5")}
    assert got["L1"] == {"-invalid_tenant_tag": Decimal("2")}
    assert got["L2"] == {"-unknown_tenant_tag": Decimal("3")}
    assert got["L3"] == {"globex": Decimal("4")}  # AWS FOCUS exports prefix user tags with "user:"
    assert got["L4"] == {"-invalid_tenant_tag": Decimal("5")}
    assert got["L5"] == {"-no_matching_rule": Decimal("6")}
    assert_conserved(lines, res)


def test_rules_apply_in_order_and_fall_through_when_a_driver_measured_nothing(tmp_path):
    cfg = parse_cost({"rules": [
        {"name": "tagged", "method": "direct"},
        {"name": "db", "match": {"services": ["Amazon RDS*"]}, "method": "proportional", "driver": "meter:llm_tokens"},
        {"name": "rest", "method": "proportional", "driver": "requests"},
    ]})
    rows = [focus_row("Amazon RDS", "8", tags={"tenant": "globex"}),  # direct wins: first rule
            focus_row("Amazon RDS", "4"),                              # meter has no data → falls to requests
            focus_row("Lambda", "5")]
    lines = lines_from(tmp_path, rows, cfg)
    res = A.allocate(lines, cfg, drivers([("acme", "requests", "3"), ("globex", "requests", "1")]))
    got = by_line(res)
    assert got["L0"] == {"globex": Decimal("8")}
    assert got["L1"] == {"acme": Decimal("3"), "globex": Decimal("1")}
    rules = {r["line_id"]: r["rule"] for r in res.table.to_pylist()}
    assert rules == {"L0": "tagged", "L1": "rest", "L2": "rest"}


def test_a_matching_driver_rule_without_data_leaves_the_line_unallocated_with_no_driver_data(tmp_path):
    cfg = parse_cost({"rules": [{"name": "p", "method": "proportional", "driver": "duration"}]})
    lines = lines_from(tmp_path, [focus_row("EC2", "2")], cfg)
    assert by_line(A.allocate(lines, cfg, drivers(REQ)))["L0"] == {"-no_driver_data": Decimal("2")}


def test_shared_cost_is_spread_by_allocated_cost_or_kept_by_the_platform(tmp_path):
    rules = [{"name": "tagged", "method": "direct"},
             {"name": "nat", "match": {"services": ["NAT"]}, "method": "shared"}]
    rows = [focus_row("S3", "3", tags={"tenant": "acme"}), focus_row("S3", "1", tags={"tenant": "globex"}),
            focus_row("NAT", "2"),
            focus_row("NAT", "5", start=dt.datetime(2026, 11, 4, tzinfo=dt.timezone.utc))]  # a day nobody had cost
    spread = parse_cost({"shared_policy": "spread", "rules": rules})
    lines = lines_from(tmp_path, rows, spread)
    res = A.allocate(lines, spread)
    got = by_line(res)
    assert got["L2"] == {"acme": Decimal("1.5"), "globex": Decimal("0.5")}
    assert got["L3"] == {PLATFORM: Decimal("5")}
    assert_conserved(lines, res)
    platform = parse_cost({"shared_policy": "platform", "rules": rules})
    assert by_line(A.allocate(lines, platform))["L2"] == {PLATFORM: Decimal("2")}


def test_even_split_over_the_catalog_or_over_active_tenants(tmp_path):
    cfg = parse_cost({"rules": [{"name": "e", "method": "even"}]})
    lines = lines_from(tmp_path, [focus_row("S3", "0.03")], cfg)
    assert by_line(A.allocate(lines, cfg, catalog=["a", "b", "c"]))["L0"] == {t: Decimal("0.01") for t in "abc"}
    active = by_line(A.allocate(lines, cfg, drivers(REQ)))["L0"]  # __unattributed__ is not a tenant
    assert active == {"acme": Decimal("0.015"), "globex": Decimal("0.015")}


def test_a_monthly_charge_is_driven_by_the_whole_charge_period(tmp_path):
    cfg = parse_cost({"rules": [{"name": "p", "method": "proportional", "driver": "requests"}]})
    month = dict(start=dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc), end=dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc))
    lines = lines_from(tmp_path, [focus_row("RDS", "9", **month)], cfg)
    d = pa.concat_tables([drivers([("acme", "requests", "1")], dt.date(2026, 11, 2)),
                          drivers([("globex", "requests", "2")], dt.date(2026, 11, 30)),
                          drivers([("globex", "requests", "100")], dt.date(2026, 12, 1))])  # outside
    assert by_line(A.allocate(lines, cfg, d))["L0"] == {"acme": Decimal("3"), "globex": Decimal("6")}


@pytest.mark.parametrize("amount,weights", [
    ("1.00", [1, 1, 1]), ("0.000000007", [5, 3, 1]), ("12345.678901234", [7, 0, 13, 2]), ("-3.3", [1, 2]),
])
def test_duckdb_split_matches_the_python_reference(tmp_path, amount, weights):
    keys = [f"t{i}" for i in range(len(weights))]
    ref = S.split_exact(Decimal(amount), weights, keys)
    assert sum(ref) == Decimal(amount)
    pct = {k: Decimal(w) * 100 / sum(weights) for k, w in zip(keys, weights)}
    # fixed percentages reproduce the same weights up to a common factor
    shares = pa.Table.from_pylist([
        {"_i": 0, "line_id": "x", "day": DAY, "service": "s", "currency": "USD", "method": "fixed", "rule": "r", "driver": None,
         "driver_quantity": None, "tenant_id": k, "amount": Decimal(amount), "weight": Decimal(w)}
        for k, w in zip(keys, weights) if w], schema=A._SHARES_SCHEMA)
    import duckdb
    out = S._split(duckdb.connect(), shares, Decimal("1e-9")).to_pylist()
    assert {r["tenant_id"]: r["amount"] for r in out} == {k: v for k, v, w in zip(keys, ref, weights) if w}
    assert pct  # weights were valid


def test_products_past_128_bits_fall_back_to_exact_python_integers():
    huge = Decimal("99999999999999999999.999999999")  # ~1e29 nanos × weights ~1e20 overflows int128
    shares = pa.Table.from_pylist([
        {"_i": 0, "line_id": "x", "day": DAY, "service": "s", "currency": "USD", "method": "proportional", "rule": "r",
         "driver": "d", "driver_quantity": None, "tenant_id": t, "amount": huge, "weight": Decimal(w)}
        for t, w in (("a", 10**20), ("b", 2 * 10**20 + 1))], schema=A._SHARES_SCHEMA)
    import duckdb
    out = S._split(duckdb.connect(), shares, Decimal("1e-9")).to_pylist()
    with decimal.localcontext(prec=60):  # the default 28 digits would round this sum itself
        assert sum(r["amount"] for r in out) == huge
    assert [r["amount"] for r in out] == S.split_exact(huge, [10**20, 2 * 10**20 + 1], ["a", "b"])


def test_no_lines_allocate_to_nothing():
    cfg = parse_cost({"rules": [{"name": "p", "method": "proportional", "driver": "requests"}]})
    empty = readers.NORMALIZED
    from tenantry import schemas
    lines = schemas.empty("cost_lines").select(["line_id", "charge_period_start", "charge_period_end", *empty[2:]])
    assert A.allocate(lines, cfg, drivers(REQ)).table.num_rows == 0


# -- chunked allocation -------------------------------------------------------------------------

CHUNK_RULES = [{"name": "tagged", "method": "direct"},
               {"name": "nat", "match": {"services": ["NAT"]}, "method": "shared"},
               {"name": "compute", "method": "proportional", "driver": "requests"}]


def chunk_lines(tmp_path, cfg) -> pa.Table:
    rows = [focus_row("NAT", "2"),  # shared first: its basis comes from lines in later chunks
            focus_row("S3", "3", tags={"tenant": "acme"}), focus_row("S3", "-3", tags={"tenant": "acme"}),
            focus_row("S3", "1", tags={"tenant": "globex"}), focus_row("EC2", "0.07"), focus_row("EC2", "-5"),
            focus_row("S3", "4", tags={"tenant": "x'; drop table L; --"}), focus_row("NAT", "0.000000001")]
    return lines_from(tmp_path, rows, cfg)


def rows_of(table: pa.Table) -> list[tuple]:
    cols = ["line_id", "tenant_id", "amount", "method", "rule", "reason"]
    return sorted((tuple(r[c] for c in cols) for r in table.select(cols).to_pylist()), key=repr)


def test_chunked_allocation_equals_the_whole_even_when_shared_basis_spans_chunks(tmp_path):
    cfg = parse_cost({"shared_policy": "spread", "rules": CHUNK_RULES})
    lines = chunk_lines(tmp_path, cfg)
    whole = A.allocate(lines, cfg, drivers(REQ))
    one_by_one = A.allocate(lines, cfg, drivers(REQ), max_rows=1)
    assert rows_of(one_by_one.table) == rows_of(whole.table)
    assert one_by_one.stats == whole.stats
    assert_conserved(lines, one_by_one)


def test_a_tenant_whose_credits_cancel_its_charges_across_chunks_gets_no_shared_cost(tmp_path):
    cfg = parse_cost({"shared_policy": "spread", "rules": CHUNK_RULES[:2]})
    lines = chunk_lines(tmp_path, cfg)  # acme: +3 then -3 in separate chunks, globex: +1
    got = by_line(A.allocate(lines, cfg, max_rows=1))
    assert got["L0"] == {"globex": Decimal("2")}
    assert got["L7"] == {"globex": Decimal("0.000000001")}


def test_chunks_stay_within_max_rows_and_are_the_same_on_every_run(tmp_path):
    cfg = parse_cost({"shared_policy": "spread", "rules": CHUNK_RULES})
    lines = chunk_lines(tmp_path, cfg)
    at = dt.datetime(2026, 11, 5, tzinfo=dt.timezone.utc)
    runs = [list(A.allocate_chunks(lines, cfg, drivers(REQ), max_rows=4, allocated_at=at)) for _ in range(2)]
    assert all(0 < c.num_rows <= 4 for c in runs[0] if c.num_rows)
    assert len(runs[0]) > 2
    assert [c.to_pylist() for c in runs[0]] == [c.to_pylist() for c in runs[1]]


def test_write_allocations_writes_one_part_per_chunk(tmp_path):
    from tenantry.cost.ingest import write_allocations
    from tenantry.warehouse import Warehouse
    cfg = parse_cost({"shared_policy": "spread", "rules": CHUNK_RULES})
    lines = chunk_lines(tmp_path, cfg)
    wh = Warehouse.open(tmp_path / "wh")
    stats = write_allocations(wh, "costalloc-t", lines, cfg, drivers(REQ), catalog=[], cost_batch="b",
                              allocated_at=dt.datetime(2026, 11, 5, tzinfo=dt.timezone.utc), max_rows=4)
    parts = sorted(p.name for p in (wh.lake / "cost_allocations" / "run=costalloc-t").glob("*.parquet"))
    assert parts and all(p.startswith("alloc-") for p in parts)
    import pyarrow.parquet as pq
    assert sum(pq.read_metadata(wh.lake / "cost_allocations" / "run=costalloc-t" / p).num_rows for p in parts) \
        == stats["rows"]
    assert stats["lines"] == lines.num_rows
