"""The canonical dimension key: the per-meter lookup SQL equals the generic definition on hostile maps."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest

from tenantry.ledger.compute import METERS_SCHEMA, _dims_key_sql, prepare_meters

# the definition: keep the declared entries, sort them, JSON-encode keys and values
REFERENCE = (
    "case when len(ents) = 0 then '{}' else '{' || array_to_string(list_transform(ents, lambda x: "
    "to_json(x.key)::varchar || ':' || coalesce(to_json(x.value)::varchar, 'null')), ',') || '}' end"
)
GROUPS = {
    "tokens": ["région", "model"],
    "odd'); drop table meters; --": ["a\"b", "𝄞", "Z", "é", "\n", "'"],
    "one": ["region"],
    "plain": [],
}
MAPS = [
    None, [], [("region", "eu")], [("région", "eu"), ("model", "m1"), ("noise", "x")],
    [("model", None)], [("model", 'm"2\\')], [("Z", "1"), ("é", "2"), ("𝄞", "3"), ("a\"b", "4"), ("\n", "5"),
                                              ("'", "6"), ("zz", "7")],
    [("region", "")], [("REGION", "eu")], [("é", None), ("'", "' or 1=1 --")],
]


def meters_table(groups: dict) -> pa.Table:
    return pa.Table.from_pylist(
        [{"name": n, "unit": None, "aggregation": "sum", "period": "day", "group_by": g} for n, g in groups.items()],
        schema=METERS_SCHEMA)


def keys(con: duckdb.DuckDBPyConnection, sql: str, params: dict) -> list:
    return con.execute(f"select meter, dimensions, {sql} from e order by all", params).fetchall()


def test_lookup_key_equals_the_generic_definition_on_hostile_names_and_values():
    con = duckdb.connect()
    try:
        con.register("meters", meters_table(GROUPS))
        prepare_meters(con)
        sql, params = _dims_key_sql(con)
        rows = [{"meter": m, "dimensions": d} for m in [*GROUPS, "undeclared"] for d in MAPS]
        con.register("ev", pa.Table.from_pylist(rows, schema=pa.schema(
            [("meter", pa.string()), ("dimensions", pa.map_(pa.string(), pa.string()))])))
        con.execute("create temp view e as select ev.meter, ev.dimensions, coalesce(m.group_by, []::varchar[]) "
                    "as group_by, coalesce(m.gb, -1) as gb from ev left join _meters m on m.name = ev.meter")
        reference = ("(select " + REFERENCE + " from (select case when len(group_by) = 0 then [] else list_sort("
                     "list_filter(map_entries(coalesce(dimensions, map())), lambda x: list_contains(group_by, x.key)))"
                     " end as ents))")
        got, want = keys(con, sql, params), keys(con, reference, {})
    finally:
        con.close()
    assert got == want
    assert any(k == '{"\\n":"5","\'":"6","Z":"1","a\\"b":"4","é":"2","𝄞":"3"}' for _, _, k in got)


@pytest.mark.parametrize("groups", [{}, {"plain": []}])
def test_without_grouped_meters_every_key_is_empty(groups):
    con = duckdb.connect()
    try:
        con.register("meters", meters_table(groups))
        prepare_meters(con)
        assert _dims_key_sql(con) == ("'{}'", {})
    finally:
        con.close()
