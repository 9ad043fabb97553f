"""Exact allocation of cost lines to tenants: every line's shares add up to its amount, exactly.

Rules (``tenantry.cost.rules``) are evaluated in order; the first rule that matches a line and
can allocate it takes it (see the rules module for when each method can). The result has one
row per (line, share) with the method, rule and driver recorded on every row; ``tenant_id``
null means unallocated and ``reason`` says why (``tenantry.schemas.CostReason``).

Exact splitting (largest remainder, a.k.a. Hamilton's method), all in integers:

1. the line's amount ``A`` is counted in nano-units (``decimal(38, 9)`` is exact there) and cut
   into ``N = |A| // unit`` allocation units (``cost.allocation_unit``, 1e-9 by default, "0.01"
   for whole cents) plus ``dust = |A| % unit`` (non-zero only when the line is finer than the unit);
2. share ``i`` with weight ``w_i`` (driver quantity, percentage, 1 for even, cost for spread)
   gets ``floor(N * w_i / W)`` units;
3. the ``N - sum(floor)`` units left over (fewer than the number of shares) go one each to the
   shares with the largest remainders ``N * w_i mod W``; ties go to the larger weight, then to the
   smaller tenant id, so the result is deterministic;
4. the dust goes to the first share in that order; the sign of ``A`` is applied last (credits
   split like charges).

So ``sum(shares) == A`` for every line by construction; the tests check it line by line. The
arithmetic runs vectorized in numpy (``tenantry.cost.split``: int64 when products fit, exact
Python ints otherwise), with DuckDB's 128-bit query and the one-line reference
(:func:`split_exact`) behind it for what numpy declines.

Memory stays flat: :func:`allocate_chunks` takes the lines in chunks sized so that one chunk
yields at most ``max_rows`` allocation rows (``DEFAULT_MAX_ROWS``), and shared lines, whose
spread basis is the cost allocated over *all* lines, are allocated last from a running basis
(days × tenants, never lines). :func:`allocate` concatenates the chunks for small inputs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterator

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tenantry.conventions import TENANT_ID_RE
from tenantry.cost.basis import add_basis, max_per_day, sum_basis
from tenantry.cost.drivers import DRIVER_SCHEMA, rule_key
from tenantry.cost.rules import CostConfig, Rule
from tenantry.cost.split import _ROW_COLS, _empty_rows, _rows_schema, _split
from tenantry.schemas import PLATFORM, QUANTITY, UNATTRIBUTED, CostReason, conform

DEFAULT_MAX_ROWS = 1_000_000  # allocation rows one chunk may hold: bounds memory, whatever the input size
_ACTIVE_KEY = "requests"  # who counts as active for an `even` rule without a tenant list


@dataclasses.dataclass
class Allocation:
    table: pa.Table  # cost_allocations rows
    stats: dict


def required_drivers(cfg: CostConfig, catalog: list[str]) -> list[tuple[str, list[str] | None]]:
    """The (driver, services) pairs the rules need measured."""
    out = [(r.driver, r.driver_services) for r in cfg.rules if r.method == "proportional"]
    if any(r.method == "even" and not r.tenants for r in cfg.rules) and not catalog:
        out.append((_ACTIVE_KEY, None))
    return out


# -- matching -----------------------------------------------------------------------------------


def _glob_regex(globs: list[str]) -> str:
    """Shell globs (``*``, ``?``) as one anchored RE2 pattern; every other character is literal."""
    parts = []
    for g in globs:
        parts.append("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in g))
    return "^(?:" + "|".join(parts) + ")$"


def _glob_mask(col: pa.ChunkedArray, globs: list[str] | None) -> np.ndarray:
    if globs is None:
        return np.ones(len(col), dtype=bool)
    if not globs:
        return np.zeros(len(col), dtype=bool)
    m = pc.match_substring_regex(col, _glob_regex(globs))
    return m.fill_null(False).to_numpy(zero_copy_only=False)


def _rule_mask(con, lines: pa.Table, rule: Rule) -> np.ndarray:
    m = rule.match
    mask = _glob_mask(lines.column("service"), m.services)
    mask &= _glob_mask(lines.column("category"), m.categories)
    mask &= _glob_mask(lines.column("resource_id"), m.resource_ids)
    for k, v in m.tags.items():
        hit = con.execute("select coalesce(tags[$k] = $v, false) as h from L order by _i", {"k": k, "v": v})
        mask &= hit.to_arrow_table().column("h").to_numpy()
    return mask


# -- allocation ---------------------------------------------------------------------------------


def allocate(lines: pa.Table, cfg: CostConfig, drivers: pa.Table | None = None, *,
             catalog: list[str] | None = None, cost_batch: str = "", run_id: str = "",
             allocated_at: dt.datetime | None = None, max_rows: int = DEFAULT_MAX_ROWS) -> Allocation:
    """Allocate ``lines`` (``cost_lines`` columns) by ``cfg.rules`` using ``drivers``
    (:data:`tenantry.cost.drivers.DRIVER_SCHEMA`). Returns all ``cost_allocations`` rows in memory;
    use :func:`allocate_chunks` to stream them instead."""
    stats = AllocationStats()
    parts = list(allocate_chunks(lines, cfg, drivers, catalog=catalog, cost_batch=cost_batch, run_id=run_id,
                                 allocated_at=allocated_at, max_rows=max_rows, stats=stats))
    table = pa.concat_tables(parts) if parts else _finish(_empty_rows(), cost_batch, run_id, dt.datetime.now(dt.timezone.utc))
    return Allocation(table, stats.as_dict())


@dataclasses.dataclass
class AllocationStats:
    lines: int = 0
    rows: int = 0
    by_method: dict = dataclasses.field(default_factory=dict)

    def add(self, table: pa.Table) -> None:
        self.rows += table.num_rows
        for m in pc.value_counts(table.column("method")).to_pylist():
            self.by_method[m["values"]] = self.by_method.get(m["values"], 0) + m["counts"]

    def as_dict(self) -> dict:
        return {"lines": self.lines, "rows": self.rows, "by_method": dict(sorted(self.by_method.items()))}


def allocate_chunks(lines: pa.Table, cfg: CostConfig, drivers: pa.Table | None = None, *,
                    catalog: list[str] | None = None, cost_batch: str = "", run_id: str = "",
                    allocated_at: dt.datetime | None = None, max_rows: int = DEFAULT_MAX_ROWS,
                    stats: AllocationStats | None = None) -> Iterator[pa.Table]:
    """Allocate like :func:`allocate`, yielding ``cost_allocations`` tables of about ``max_rows``
    rows at most, so memory stays flat however many lines and tenants there are.

    Lines are taken in chunks sized by the most shares a line can get. Shared lines are spread by
    the cost allocated to each tenant over *all* lines, so they come last: their basis is summed
    chunk by chunk on the way. The same input and ``max_rows`` yield the same chunks in the same
    order (part names built from the chunk number are deterministic).
    """
    catalog = sorted(catalog or [])
    drivers = drivers if drivers is not None else DRIVER_SCHEMA.empty_table()
    allocated_at = allocated_at or dt.datetime.now(dt.timezone.utc)
    stats = stats if stats is not None else AllocationStats()
    n = lines.num_rows
    stats.lines += n
    shared_idx = [i for i, r in enumerate(cfg.rules) if r.method == "shared"]
    step = max(1, max_rows // _fanout(cfg, catalog, drivers))
    basis_parts: list[pa.Table] = []
    shared_at, shared_rule = [], []  # the lines shared rules took (global index, rule index)
    for start in range(0, n, step):
        chunk = lines.slice(start, step)
        con = _open(chunk, drivers)
        try:
            assigned, blocked = _assign(con, chunk, cfg, catalog)
            con.register("A", pa.table({"_i": pa.array(np.arange(chunk.num_rows, dtype=np.int64)),
                                        "rule_idx": pa.array(assigned, pa.int32())}))
            shares = [_driver_shares(con, cfg), _even_shares(con, cfg, catalog), _fixed_shares(con, cfg)]
            first = pa.concat_tables([_direct(con, cfg, catalog), _unassigned(con, blocked),
                                      _split(con, pa.concat_tables(shares), cfg.allocation_unit)])
            if shared_idx and cfg.shared_policy == "spread":
                basis_parts = add_basis(con, basis_parts, first)
        finally:
            con.close()
        took = np.flatnonzero(np.isin(assigned, shared_idx))
        shared_at.append(took + start)
        shared_rule.append(assigned[took])
        yield _emit(first, cost_batch, run_id, allocated_at, stats)
    if not shared_idx or not n:
        return
    at, rule_of = np.concatenate(shared_at), np.concatenate(shared_rule)
    basis = sum_basis(basis_parts, final=True)
    step = max(1, max_rows // max(1, max_per_day(basis)))
    for start in range(0, len(at), step):
        chunk = lines.take(pa.array(at[start:start + step]))
        con = _open(chunk, None)
        try:
            con.register("A", pa.table({"_i": pa.array(np.arange(chunk.num_rows, dtype=np.int64)),
                                        "rule_idx": pa.array(rule_of[start:start + step], pa.int32())}))
            rows = _shared(con, cfg, basis)
        finally:
            con.close()
        yield _emit(rows, cost_batch, run_id, allocated_at, stats)


def _emit(rows: pa.Table, cost_batch: str, run_id: str, at: dt.datetime, stats: AllocationStats) -> pa.Table:
    table = _finish(_unattributed_to_unallocated(rows), cost_batch, run_id, at)
    stats.add(table)
    return table


def _fanout(cfg: CostConfig, catalog: list[str], drivers: pa.Table) -> int:
    """The most shares one non-shared line can get (an upper bound)."""
    most = [1, len(catalog), len(pc.unique(drivers.column("tenant_id")))]
    most += [len(r.tenants or []) + len(r.percentages or {}) for r in cfg.rules]
    return max(most)


def _open(chunk: pa.Table, drivers: pa.Table | None) -> duckdb.DuckDBPyConnection:
    """A connection holding the chunk's lines as ``L`` and, with ``drivers``, the summed drivers of
    each distinct charge window as ``WW``."""
    con = duckdb.connect(":memory:")
    try:
        con.execute("set timezone = 'UTC'")
        con.register("lines_in", chunk.append_column("_i", pa.array(np.arange(chunk.num_rows, dtype=np.int64))))
        con.execute("""
            create temp table L as
            select _i, line_id, day, service, category, tenant_tag, tags, amount, currency,
                   day as w_start,
                   greatest(day + 1, ((charge_period_end - interval 1 microsecond) at time zone 'UTC')::date + 1) as w_end
            from lines_in""")  # no order by: every reader joins on _i or orders itself
        con.unregister("lines_in")
        if drivers is not None:
            con.register("D", drivers)
            con.execute("""
                create temp table WW as
                select w.w_start, w.w_end, d.driver_key, d.tenant_id, sum(d.quantity) as q
                from (select distinct w_start, w_end from L) w
                join D d on d.day >= w.w_start and d.day < w.w_end
                group by all having sum(d.quantity) > 0""")
    except BaseException:
        con.close()
        raise
    return con


def _assign(con, lines: pa.Table, cfg: CostConfig, catalog: list[str]) -> tuple[np.ndarray, np.ndarray]:
    n = lines.num_rows
    assigned = np.full(n, -1, dtype=np.int32)
    blocked = np.zeros(n, dtype=bool)  # a driver rule matched but measured nothing
    tagged = pc.and_(pc.is_valid(lines.column("tenant_tag")),
                     pc.not_equal(lines.column("tenant_tag"), "")).fill_null(False).to_numpy(zero_copy_only=False) \
        if n else np.zeros(0, dtype=bool)
    for idx, rule in enumerate(cfg.rules):
        cand = (assigned == -1) & _rule_mask(con, lines, rule)
        if rule.method == "direct":
            cand &= tagged
        elif rule.method == "proportional" or (rule.method == "even" and not rule.tenants and not catalog):
            key = rule_key(rule) if rule.method == "proportional" else _ACTIVE_KEY
            has = np.zeros(n, dtype=bool)
            hit = con.execute(
                "select distinct L._i from L join WW using (w_start, w_end) where WW.driver_key = $k "
                + ("and WW.tenant_id <> $u" if rule.method == "even" else "and $u = $u"),
                {"k": key, "u": UNATTRIBUTED}).fetchnumpy()["_i"]
            has[np.asarray(hit, dtype=np.int64)] = True
            if rule.method == "proportional":
                blocked |= cand & ~has
            cand &= has
        assigned[cand] = idx
    return assigned, blocked


def _direct(con, cfg: CostConfig, catalog: list[str]) -> pa.Table:
    direct_idx = [i for i, r in enumerate(cfg.rules) if r.method == "direct"]
    if not direct_idx:
        return _empty_rows()
    got = con.sql(
        "select L.line_id, L.day, L.service, L.currency, L.amount, L.tenant_tag, A.rule_idx "
        "from L join A using (_i) where A.rule_idx in (select unnest($idx::int[]))", params={"idx": direct_idx}
    ).to_arrow_table()
    if got.num_rows == 0:
        return _empty_rows()
    # validate each distinct tag once: fail closed on hostile or unknown ids, never guess
    enc = got.column("tenant_tag").combine_chunks().dictionary_encode()
    known = set(catalog)
    verdict = []
    for tag in enc.dictionary.to_pylist():
        if not TENANT_ID_RE.match(tag) or tag in (UNATTRIBUTED,):
            verdict.append((None, str(CostReason.INVALID_TENANT_TAG)))
        elif known and tag not in known and tag != PLATFORM:
            verdict.append((None, str(CostReason.UNKNOWN_TENANT_TAG)))
        else:
            verdict.append((tag, None))
    tenants = pa.array([v[0] for v in verdict], pa.string()).take(enc.indices)
    reasons = pa.array([v[1] for v in verdict], pa.string()).take(enc.indices)
    names = pa.array([r.name for r in cfg.rules], pa.string()).take(got.column("rule_idx"))
    method = pc.if_else(pc.is_null(tenants), "unallocated", "direct")
    return pa.table({
        "line_id": got.column("line_id"), "day": got.column("day"), "service": got.column("service"),
        "currency": got.column("currency"), "method": method, "rule": names,
        "driver": pa.nulls(got.num_rows, pa.string()), "driver_quantity": pa.nulls(got.num_rows, QUANTITY),
        "tenant_id": tenants, "amount": got.column("amount"), "reason": reasons,
    }).select(_ROW_COLS).cast(_rows_schema())


def _unassigned(con, blocked: np.ndarray) -> pa.Table:
    con.register("B", pa.table({"_i": pa.array(np.arange(len(blocked), dtype=np.int64)), "blocked": blocked}))
    return con.sql(
        "select L.line_id, L.day, L.service, L.currency, 'unallocated' as method, null::varchar as rule, "
        "null::varchar as driver, null::decimal(38, 9) as driver_quantity, null::varchar as tenant_id, L.amount, "
        "case when B.blocked then $nd else $nr end as reason "
        "from L join A using (_i) join B using (_i) where A.rule_idx = -1",
        params={"nd": str(CostReason.NO_DRIVER_DATA), "nr": str(CostReason.NO_MATCHING_RULE)},
    ).to_arrow_table().cast(_rows_schema())


def _driver_shares(con, cfg: CostConfig) -> pa.Table:
    parts = []
    for idx, rule in enumerate(cfg.rules):
        if rule.method != "proportional":
            continue
        parts.append(con.sql(
            "select L._i, L.line_id, L.day, L.service, L.currency, 'proportional' as method, $rule as rule, "
            "$key as driver, WW.q::decimal(38, 9) as driver_quantity, WW.tenant_id, L.amount, "
            "(WW.q * 1000000000)::hugeint as weight "
            "from L join A using (_i) join WW using (w_start, w_end) "
            "where A.rule_idx = $idx and WW.driver_key = $key", params={"rule": rule.name, "key": rule_key(rule), "idx": idx}).to_arrow_table())
    return _concat_shares(parts)


def _even_shares(con, cfg: CostConfig, catalog: list[str]) -> pa.Table:
    parts = []
    for idx, rule in enumerate(cfg.rules):
        if rule.method != "even":
            continue
        fixed_set = rule.tenants or catalog
        if fixed_set:
            con.register("T", pa.table({"tenant_id": pa.array(sorted(set(fixed_set)), pa.string())}))
            src = "cross join T"
        else:  # active tenants: measured any requests in the line's period
            con.execute(f"create or replace temp view T as select distinct w_start, w_end, tenant_id from WW "
                        f"where driver_key = '{_ACTIVE_KEY}' and tenant_id <> '{UNATTRIBUTED}'")
            src = "join T using (w_start, w_end)"
        parts.append(con.sql(
            "select L._i, L.line_id, L.day, L.service, L.currency, 'even' as method, $rule as rule, "
            f"null::varchar as driver, 1::decimal(38, 9) as driver_quantity, T.tenant_id, L.amount, 1::hugeint as weight "
            f"from L join A using (_i) {src} where A.rule_idx = $idx", params={"rule": rule.name, "idx": idx}).to_arrow_table())
        con.execute("drop view if exists T")
        if fixed_set:
            con.unregister("T")
    return _concat_shares(parts)


def _fixed_shares(con, cfg: CostConfig) -> pa.Table:
    parts = []
    for idx, rule in enumerate(cfg.rules):
        if rule.method != "fixed":
            continue
        pct = {t: p for t, p in sorted(rule.percentages.items()) if p > 0}
        con.register("P", pa.table({"tenant_id": pa.array(list(pct), pa.string()),
                                    "pct": pa.array(list(pct.values()), QUANTITY)}))
        parts.append(con.sql(
            "select L._i, L.line_id, L.day, L.service, L.currency, 'fixed' as method, $rule as rule, "
            "null::varchar as driver, P.pct as driver_quantity, P.tenant_id, L.amount, "
            "(P.pct * 1000000000)::hugeint as weight "
            "from L join A using (_i) cross join P where A.rule_idx = $idx", params={"rule": rule.name, "idx": idx}).to_arrow_table())
        con.unregister("P")
    return _concat_shares(parts)


_SHARES_SCHEMA = pa.schema([("_i", pa.int64()), ("line_id", pa.string()), ("day", pa.date32()), ("service", pa.string()),
                            ("currency", pa.string()), ("method", pa.string()), ("rule", pa.string()),
                            ("driver", pa.string()), ("driver_quantity", QUANTITY), ("tenant_id", pa.string()),
                            ("amount", QUANTITY), ("weight", pa.decimal128(38, 0))])


def _concat_shares(parts: list[pa.Table]) -> pa.Table:
    return pa.concat_tables([p.cast(_SHARES_SCHEMA) for p in parts]) if parts else _SHARES_SCHEMA.empty_table()


def _shared(con, cfg: CostConfig, basis: pa.Table) -> pa.Table:
    """Shared lines: spread by each tenant's cost allocated that day (same currency), or platform."""
    shared_idx = [i for i, r in enumerate(cfg.rules) if r.method == "shared"]
    if not shared_idx:
        return _empty_rows()
    con.register("basis", basis)
    names = {i: cfg.rules[i].name for i in shared_idx}
    con.register("R", pa.table({"rule_idx": pa.array(list(names), pa.int32()), "rule": list(names.values())}))
    spread = cfg.shared_policy == "spread"
    shares = con.sql(
        "select L._i, L.line_id, L.day, L.service, L.currency, 'shared_spread' as method, R.rule, "
        "'allocated_cost' as driver, b.cost::decimal(38, 9) as driver_quantity, b.tenant_id, L.amount, "
        "(b.cost * 1000000000)::hugeint as weight "
        "from L join A using (_i) join R using (rule_idx) join basis b using (day, currency) where $spread"
        , params={"spread": spread}).to_arrow_table()
    platform = con.sql(
        "select L.line_id, L.day, L.service, L.currency, 'shared_platform' as method, R.rule, "
        "null::varchar as driver, null::decimal(38, 9) as driver_quantity, $p as tenant_id, L.amount, "
        "null::varchar as reason "
        "from L join A using (_i) join R using (rule_idx) "
        "where not $spread or not exists (select 1 from basis b where b.day = L.day and b.currency = L.currency)", params={"spread": spread, "p": PLATFORM}).to_arrow_table()
    return pa.concat_tables([_split(con, _concat_shares([shares]), cfg.allocation_unit),
                             platform.cast(_rows_schema())])


def _unattributed_to_unallocated(rows: pa.Table) -> pa.Table:
    un = pc.equal(rows.column("tenant_id"), UNATTRIBUTED).fill_null(False)
    return rows.set_column(rows.schema.get_field_index("tenant_id"), "tenant_id",
                           pc.if_else(un, pa.scalar(None, pa.string()), rows.column("tenant_id"))) \
        .set_column(rows.schema.get_field_index("method"), "method", pc.if_else(un, "unallocated", rows.column("method"))) \
        .set_column(rows.schema.get_field_index("reason"), "reason",
                    pc.if_else(un, str(CostReason.UNATTRIBUTED_USAGE), rows.column("reason")))


def _finish(rows: pa.Table, cost_batch: str, run_id: str, at: dt.datetime) -> pa.Table:
    n = rows.num_rows
    rows = rows.append_column("cost_batch", pa.repeat(pa.scalar(cost_batch, pa.string()), n)) \
        .append_column("allocated_at", pa.repeat(pa.scalar(at, pa.timestamp("us", tz="UTC")), n)) \
        .append_column("ingest_batch", pa.repeat(pa.scalar(run_id, pa.string()), n))
    return conform("cost_allocations", rows)
