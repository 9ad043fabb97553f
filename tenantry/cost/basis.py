"""The basis of ``shared`` lines: cost allocated per (day, currency, tenant), summed over chunks.

A shared line is spread in proportion to what each tenant was allocated that day, over *all*
lines, so chunked allocation sums each chunk's contribution here and applies the ``> 0`` filter
only to the total (a tenant's credits in one chunk offset its charges in another). The basis
holds days × currencies × tenants rows, never lines.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from tenantry.schemas import PLATFORM, UNATTRIBUTED

_BASIS_SCHEMA = pa.schema([("day", pa.date32()), ("currency", pa.string()), ("tenant_id", pa.string()),
                           ("cost", pa.decimal128(38, 9))])


def add_basis(con, parts: list[pa.Table], first: pa.Table) -> list[pa.Table]:
    """Add this chunk's cost per (day, currency, tenant) to the running basis of shared lines."""
    con.register("F", first)
    part = con.sql("select day, currency, tenant_id, sum(amount) as cost from F "
                   "where tenant_id is not null and tenant_id not in ($p, $u) group by all",
                   params={"p": PLATFORM, "u": UNATTRIBUTED}).to_arrow_table().cast(_BASIS_SCHEMA)
    con.unregister("F")
    parts = parts + [part]
    # fold now and then: the basis is days × tenants, never lines
    return [sum_basis(parts, final=False)] if len(parts) >= 32 else parts


def sum_basis(parts: list[pa.Table], final: bool) -> pa.Table:
    """The parts summed per (day, currency, tenant); ``final`` keeps only tenants with cost > 0."""
    if not parts:
        return _BASIS_SCHEMA.empty_table()
    con = duckdb.connect(":memory:")
    try:
        con.register("P", pa.concat_tables(parts))
        # only the total decides who gets a share: a tenant's credits in one chunk offset its charges in another
        having = "having sum(cost) > 0" if final else ""
        return con.sql(f"select day, currency, tenant_id, sum(cost) as cost from P group by all {having}") \
            .to_arrow_table().cast(_BASIS_SCHEMA)
    finally:
        con.close()


def max_per_day(basis: pa.Table) -> int:
    """The most tenants sharing one (day, currency): the most shares a shared line can get."""
    if basis.num_rows == 0:
        return 1
    return max(c for c in pc.value_counts(pc.binary_join_element_wise(
        basis.column("day").cast(pa.string()), basis.column("currency"), "|")).field("counts").to_pylist())
