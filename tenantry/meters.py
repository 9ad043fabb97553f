"""Meters: what is billed, and usage derived from telemetry by a meter definition.

A meter either names usage the app reports with ``tenantry.record_usage`` (``source:
usage_events``) or derives usage from telemetry (``spans``, ``logs``, ``metric_points``)::

    meters:
      - name: api.calls                # reported by the app; defaults: sum, per day
        unit: "{call}"
        group_by: [region]             # dimension names the ledger keeps apart
      - name: api.requests             # derived: one per matching server span
        source: spans
        filter: 'span.kind == "server" and attributes["http.route"] startswith "/api/"'
        aggregation: count
        group_by: ['attributes["http.route"]']
        period: hour
      - name: storage.peak_gb
        source: metric_points
        filter: 'metric.metric_name == "storage.used_gb"'
        aggregation: max
        value: value

``filter`` is a small, safe expression language, parsed here (tokenizer and recursive descent,
never ``eval``) and evaluated on whole Arrow columns: ``== != < <= > >=``, ``and or not``,
parentheses, ``startswith endswith contains``, ``in [..]``, string/number literals, ``true
false``, columns of the source table (optionally prefixed ``span.`` / ``log.`` / ``metric.`` /
``event.``) and map lookups ``attributes["k"]``, ``resource["k"]``, ``dimensions["k"]``. A string
compared with a number is read as a number (text that is not a number never matches). A null
never matches. Errors name the meter and the character position.

``value`` (sum, max, latest, unique_count) is one operand of that language; ``group_by`` items
are operands too, and a bare name that is not a column means ``attributes["name"]``
(``dimensions["name"]`` for usage_events meters). Derived usage has a deterministic ``event_id``
(from trace id, span id and meter; for logs and metric points from the record's content;
for unique_count from the value and period), so deriving twice is idempotent.
"""

from __future__ import annotations

import dataclasses
import re
from typing import NamedTuple

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tenantry import schemas
from tenantry.config import Meter

MAX_FILTER_CHARS = 4096
MAX_DEPTH = 64
TELEMETRY = ("spans", "logs", "metric_points")
_PREFIX = {"spans": "span.", "logs": "log.", "metric_points": "metric.", "usage_events": "event."}
_MAPS = {"attributes": "attributes", "resource": "resource_attributes", "dimensions": "dimensions"}
_TIME = {"spans": "start_time", "logs": "time", "metric_points": "time"}
# what identifies one record, for the deterministic event_id of derived usage
_IDENTITY = {
    "spans": ("trace_id", "span_id"),
    "logs": ("tenant_id", "service_name", "time", "observed_time", "trace_id", "span_id",
             "severity_number", "event_name", "body", "attributes"),
    "metric_points": ("tenant_id", "service_name", "metric_name", "type", "time", "start_time",
                      "attributes", "resource_attributes"),
}
_KEYWORDS = {"and", "or", "not", "in", "startswith", "endswith", "contains", "true", "false", "null"}
_CMP = {"==": "equal", "!=": "not_equal", "<": "less", "<=": "less_equal", ">": "greater", ">=": "greater_equal"}
_STRFN = {"startswith": "starts_with", "endswith": "ends_with", "contains": "match_substring"}
_TOKEN = re.compile(
    r"""(?P<ws>\s+)|(?P<num>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)|(?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')"""
    r"""|(?P<op>==|!=|<=|>=|<|>|\(|\)|\[|\]|,|-)|(?P<name>[^\W\d][\w.]*)"""
)
_NUMERIC_TEXT = r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$"
_EXACT_TEXT = r"^\s*[+-]?\d{1,28}(\.\d{0,9})?\s*$"


class MeterError(ValueError):
    """A meter definition is invalid; the message names the meter, the key and the position."""


class Derived(NamedTuple):
    usage: pa.Table  # USAGE_EVENTS rows, source "derived"
    quarantined: pa.Table  # QUARANTINE rows: a value that is negative, not finite or too large


# -- parsing ------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Node:
    kind: str  # col | map | lit | cmp | str | in | and | or | not
    pos: int
    args: tuple = ()


def _tokens(text: str, where: str) -> list[tuple[str, object, int]]:
    out, i = [], 0
    while i < len(text):
        m = _TOKEN.match(text, i)
        if not m:
            raise MeterError(f"{where}: unexpected character {text[i]!r} at position {i}")
        kind = m.lastgroup
        if kind == "num":
            out.append(("lit", float(m.group()) if any(c in m.group() for c in ".eE") else int(m.group()), i))
        elif kind == "str":
            body = m.group()[1:-1]
            out.append(("lit", re.sub(r"\\(.)", lambda e: {"n": "\n", "t": "\t"}.get(e.group(1), e.group(1)), body), i))
        elif kind in ("op", "name"):
            word = m.group()
            out.append(("kw" if word in _KEYWORDS else kind, word, i))
        i = m.end()
    out.append(("end", None, len(text)))
    return out


class _Parser:
    def __init__(self, text: str, where: str):
        self.where = where
        self.toks = _tokens(text, where)
        self.i = 0
        self.depth = 0

    def error(self, msg: str, pos: int | None = None) -> MeterError:
        return MeterError(f"{self.where}: {msg} at position {self.toks[self.i][2] if pos is None else pos}")

    def peek(self, *values: str) -> bool:
        kind, val, _ = self.toks[self.i]
        return kind in ("op", "kw") and val in values

    def take(self, value: str) -> int:
        if not self.peek(value):
            got = self.toks[self.i][1]
            raise self.error(f"expected {value!r}, found {'end of text' if got is None else repr(got)}")
        self.i += 1
        return self.toks[self.i - 1][2]

    def parse(self, operand_only: bool = False) -> Node:
        node = self.operand() if operand_only else self.or_()
        if self.toks[self.i][0] != "end":
            raise self.error(f"unexpected {self.toks[self.i][1]!r}")
        return node

    def _binary(self, word: str, sub) -> Node:
        node = sub()
        while self.peek(word):
            pos = self.take(word)
            node = Node(word, pos, (node, sub()))
        return node

    def or_(self) -> Node:
        return self._binary("or", self.and_)

    def and_(self) -> Node:
        return self._binary("and", self.not_)

    def not_(self) -> Node:
        if self.peek("not"):
            pos = self.take("not")
            self._enter()
            node = Node("not", pos, (self.not_(),))
            self.depth -= 1
            return node
        return self.comparison()

    def _enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"expression nested deeper than {MAX_DEPTH} levels")

    def comparison(self) -> Node:
        left = self.operand()
        kind, val, pos = self.toks[self.i]
        if kind == "op" and val in _CMP:
            self.i += 1
            return Node("cmp", pos, (val, left, self.operand()))
        if kind == "kw" and val in _STRFN:
            self.i += 1
            right = self.operand()
            if right.kind != "lit" or not isinstance(right.args[0], str):
                raise self.error(f"{val} needs a string literal on its right", right.pos)
            return Node("str", pos, (val, left, right))
        negate = False
        if self.peek("not") and self.toks[self.i + 1][1] == "in":
            self.i += 1
            negate = True
        if self.peek("in"):
            self.take("in")
            return Node("in", pos, (left, self.list_(), negate))
        return left

    def list_(self) -> tuple:
        self.take("[")
        values = []
        while True:
            values.append(self.literal())
            if not self.peek(","):
                break
            self.take(",")
        self.take("]")
        return tuple(values)

    def literal(self):
        neg = self.peek("-")
        if neg:
            self.take("-")
        kind, val, pos = self.toks[self.i]
        if kind == "kw" and val in ("true", "false", "null") and not neg:
            self.i += 1
            return {"true": True, "false": False, "null": None}[val]
        if kind != "lit" or (neg and isinstance(val, str)):
            raise self.error("expected a literal (string, number, true, false)")
        self.i += 1
        return -val if neg else val

    def operand(self) -> Node:
        kind, val, pos = self.toks[self.i]
        if self.peek("("):
            self.take("(")
            self._enter()
            node = self.or_()
            self.depth -= 1
            self.take(")")
            return node
        if kind == "name":
            self.i += 1
            if self.peek("["):
                self.take("[")
                key_kind, key, key_pos = self.toks[self.i]
                if key_kind != "lit" or not isinstance(key, str):
                    raise self.error(f'{val}[...] needs a string key, like {val}["http.route"]', key_pos)
                self.i += 1
                self.take("]")
                return Node("map", pos, (val, key))
            return Node("col", pos, (val,))
        if kind == "lit" or self.peek("-", "true", "false", "null"):
            return Node("lit", pos, (self.literal(),))
        got = "end of text" if val is None else repr(val)
        raise self.error(f"expected a column, attributes[\"key\"], a literal or '(', found {got}")


# -- resolving names and types against the source table -----------------------------------------

def _resolve(node: Node, source: str, where: str) -> Node:
    """Check names against the source table's schema; returns the node with real column names."""
    schema = schemas.LAKE_TABLES[source]
    if node.kind == "col":
        name = node.args[0]
        for table, prefix in _PREFIX.items():
            if name.startswith(prefix):
                if table != source:
                    raise MeterError(f"{where}: {prefix!r} names a {table} field but this meter reads "
                                     f"{source}, at position {node.pos}")
                name = name[len(prefix):]
        if name not in schema.names or name in _MAPS.values():
            cols = ", ".join(n for n in schema.names if n not in _MAPS.values())
            raise MeterError(f"{where}: unknown column {node.args[0]!r} at position {node.pos}; {source} has "
                             f"{cols} (for an attribute use attributes[\"{node.args[0]}\"])")
        return Node("col", node.pos, (name,))
    if node.kind == "map":
        col = _MAPS.get(node.args[0])
        if col is None or col not in schema.names:
            maps = [k for k, v in _MAPS.items() if v in schema.names]
            raise MeterError(f"{where}: {node.args[0]!r}[...] at position {node.pos} is not a map of {source}; "
                             f"use {' or '.join(maps)}")
        return Node("map", node.pos, (col, node.args[1]))
    if node.kind == "lit":
        return node
    args = tuple(_resolve(a, source, where) if isinstance(a, Node) else a for a in node.args)
    return Node(node.kind, node.pos, args)


def _type(node: Node, source: str) -> pa.DataType:
    if node.kind == "col":
        return schemas.LAKE_TABLES[source].field(node.args[0]).type
    if node.kind == "map":
        return pa.string()
    if node.kind == "lit":
        v = node.args[0]
        return pa.null() if v is None else pa.bool_() if isinstance(v, bool) else pa.string() if isinstance(v, str) else pa.float64()
    return pa.bool_()


def _is_num(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)


def _check(node: Node, source: str, where: str, boolean: bool = True) -> None:
    """Reject comparisons that can never be meaningful (a timestamp against a string, ...)."""
    k = node.kind
    if k in ("and", "or", "not"):
        for a in node.args:
            _check(a, source, where)
    elif k == "cmp":
        lt, rt = _type(node.args[1], source), _type(node.args[2], source)
        ok = lt == rt or pa.null() in (lt, rt) or {_is_num(lt) or pa.types.is_string(lt), _is_num(rt) or pa.types.is_string(rt)} == {True}
        if not ok:
            raise MeterError(f"{where}: cannot compare {lt} with {rt} at position {node.pos}")
    elif k == "str":
        if not pa.types.is_string(_type(node.args[1], source)):
            raise MeterError(f"{where}: {node.args[0]} needs a text operand at position {node.pos}")
    elif k in ("col", "map", "lit") and boolean and _type(node, source) != pa.bool_():
        raise MeterError(f"{where}: {k if k != 'col' else node.args[0]!s} at position {node.pos} is not a "
                         "condition; compare it, e.g. == \"x\"")


def parse_filter(text: str, source: str, where: str = "filter") -> Node:
    """Parse and check a filter for ``source``; :class:`MeterError` naming ``where`` and the position."""
    if not isinstance(text, str) or not text.strip():
        raise MeterError(f"{where}: empty filter; remove the key to match every record")
    if len(text) > MAX_FILTER_CHARS:
        raise MeterError(f"{where}: filter is {len(text)} characters; at most {MAX_FILTER_CHARS}")
    node = _resolve(_Parser(text, where).parse(), source, where)
    _check(node, source, where)
    return node


def parse_operand(text: str, source: str, where: str, bare_map: str | None = None) -> Node:
    """A column or map lookup (``value`` and ``group_by`` items); a bare non-column name means
    ``bare_map[name]`` when given."""
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_FILTER_CHARS:
        raise MeterError(f"{where}: expected a column or attributes[\"key\"], got {str(text)[:60]!r}")
    node = _Parser(text, where).parse(operand_only=True)
    prefixed = node.kind == "col" and any(node.args[0].startswith(p) for p in _PREFIX.values())
    if node.kind == "col" and bare_map and not prefixed and node.args[0] not in schemas.LAKE_TABLES[source].names:
        node = Node("map", node.pos, (bare_map, node.args[0]))
    if node.kind not in ("col", "map"):
        raise MeterError(f"{where}: expected a column or attributes[\"key\"], got {text[:60]!r}")
    return _resolve(node, source, where)


# -- evaluation on Arrow columns ----------------------------------------------------------------

def _as_number(arr: pa.Array) -> pa.Array:
    if _is_num(arr.type):
        return arr.cast(pa.float64())
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        ok = pc.match_substring_regex(arr, _NUMERIC_TEXT)
        return pc.if_else(ok, arr, pa.scalar(None, arr.type)).cast(pa.float64())
    return arr


def evaluate(node: Node, data: pa.Table) -> pa.Array | pa.Scalar:
    """The value of ``node`` on every row of ``data`` (an array, or a scalar for a literal)."""
    k = node.kind
    if k == "col":
        return data.column(node.args[0]).combine_chunks()
    if k == "map":
        return pc.map_lookup(data.column(node.args[0]).combine_chunks(), pa.scalar(node.args[1]), "first")
    if k == "lit":
        return pa.scalar(node.args[0])
    if k in ("and", "or"):
        fn = pc.and_kleene if k == "and" else pc.or_kleene
        return fn(evaluate(node.args[0], data), evaluate(node.args[1], data))
    if k == "not":
        return pc.invert(evaluate(node.args[0], data))
    if k == "str":
        return getattr(pc, _STRFN[node.args[0]])(evaluate(node.args[1], data), pattern=node.args[2].args[0])
    if k == "in":
        left = evaluate(node.args[0], data)
        values = [v for v in node.args[1] if v is not None]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            left, vs = _as_number(left), pa.array(values, pa.float64())
        else:
            vs = pa.array([v if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)
                           for v in values], pa.string())
            left = left.cast(pa.string()) if not pa.types.is_string(left.type) else left
        found = pc.is_in(left, value_set=vs)
        found = pc.if_else(pc.is_null(left), pa.scalar(None, pa.bool_()), found)
        return pc.invert(found) if node.args[2] else found
    op, a, b = node.args
    left, right = evaluate(a, data), evaluate(b, data)
    if _is_num(left.type) != _is_num(right.type) and pa.null() not in (left.type, right.type):
        left, right = _as_number(left), _as_number(right)
    return getattr(pc, _CMP[op])(left, right)


def mask(node: Node | None, data: pa.Table) -> pa.Array:
    """Rows of ``data`` matching the filter (nulls never match); all rows when there is none."""
    if node is None:
        return pa.array(np.ones(data.num_rows, dtype=bool))
    out = evaluate(node, data)
    if isinstance(out, pa.Scalar):
        out = pa.array(np.full(data.num_rows, bool(out.as_py())))
    return out.fill_null(False)


# -- meter definitions --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class CompiledMeter:
    """A validated meter: its filter, value and group_by parsed against its source table."""

    meter: Meter
    filter: Node | None
    value: Node | None
    #: (dimension name, operand), sorted by name so dimension maps come out in canonical order
    group_by: tuple[tuple[str, Node], ...]


def compile_meter(m: Meter, index: int = 0) -> CompiledMeter:
    """Validate one meter; :class:`MeterError` names ``meters[i] (name).key`` and the position."""
    from tenantry.context import validation_error

    where = f"meters[{index}] ({str(m.name)[:64]!r})"
    problem = validation_error(m.name, "meter name")
    if problem:
        raise MeterError(f"{where}.name: {problem}")
    src = m.source
    if src == "usage_events":
        for key, bad in (("filter", m.filter), ("value", m.value)):
            if bad is not None:
                raise MeterError(f"{where}.{key}: a usage_events meter counts every event recorded under its "
                                 f"name; {key} applies to spans, logs and metric_points meters")
        if m.aggregation == "unique_count":
            raise MeterError(f"{where}.aggregation: unique_count needs a telemetry source (spans, logs, "
                             "metric_points) and a value; use count or sum for reported usage")
    elif m.aggregation == "count" and m.value is not None:
        raise MeterError(f"{where}.value: aggregation count counts matching records; remove value")
    elif m.aggregation != "count" and m.value is None:
        raise MeterError(f"{where}.value: aggregation {m.aggregation} needs a value, e.g. value: duration_ms "
                         "or value: 'attributes[\"bytes\"]'")
    flt = parse_filter(m.filter, src, f"{where}.filter") if m.filter is not None else None
    value = parse_operand(m.value, src, f"{where}.value") if m.value is not None else None
    bare = "dimensions" if src == "usage_events" else "attributes"
    dims: dict[str, Node] = {}
    for j, item in enumerate(m.group_by):
        if src == "usage_events" and isinstance(item, str) and not item.startswith("dimensions["):
            node = Node("map", 0, ("dimensions", item))  # a dimension name, verbatim
        else:
            node = parse_operand(item, src, f"{where}.group_by[{j}]", bare_map=bare)
        name = node.args[0] if node.kind == "col" else node.args[1]
        if name in dims:
            raise MeterError(f"{where}.group_by[{j}]: dimension {name!r} is listed twice")
        dims[name] = node
    return CompiledMeter(m, flt, value, tuple(sorted(dims.items())))


def compile_meters(meters: list[Meter]) -> list[CompiledMeter]:
    """Validate every meter (call at start-up so a bad filter fails before any data moves)."""
    return [compile_meter(m, i) for i, m in enumerate(meters)]


# -- derived usage ------------------------------------------------------------------------------

def _text(arr: pa.Array) -> pa.Array:
    """Any column as text for hashing: timestamps as epoch ns, maps as k\\x1ev pairs, null as \\x00."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_map(arr.type):
        pairs = pc.binary_join_element_wise(arr.keys, arr.items.fill_null("\x00"), "\x1e")
        lists = pa.ListArray.from_arrays(arr.offsets, pairs)
        arr = pc.if_else(arr.is_null(), pa.scalar(None, pa.string()), pc.binary_join(lists, "\x1d"))
    elif pa.types.is_timestamp(arr.type):
        arr = arr.cast(pa.int64())
    return arr.cast(pa.string()).fill_null("\x00")


def hash_ids(parts: list[pa.Array]) -> pa.Array:
    """Deterministic 32-hex ids: sha256 of the parts joined by \\x1f (vectorized in DuckDB)."""
    joined = pc.binary_join_element_wise(*[_text(p) for p in parts], "\x1f")
    con = duckdb.connect()
    try:
        con.register("k", pa.table({"k": joined}))
        return con.sql("select substr(sha256(k), 1, 32) as id from k").to_arrow_table().column("id").combine_chunks()
    finally:
        con.close()


def _dimensions(cm: CompiledMeter, data: pa.Table) -> pa.Array:
    n = data.num_rows
    if not cm.group_by:
        return pa.MapArray.from_arrays(pa.array(np.zeros(n + 1, np.int32)), pa.array([], pa.string()),
                                       pa.array([], pa.string()))
    vals = [_text_or_null(evaluate(node, data)) for _, node in cm.group_by]
    valid = np.stack([v.is_valid().to_numpy(zero_copy_only=False) for v in vals], axis=1)  # (n, k)
    rows, which = np.nonzero(valid)  # row-major: by row, then by dimension name (sorted)
    flat = pa.concat_arrays(vals).take(pa.array(which * n + rows))
    names = pa.array([name for name, _ in cm.group_by], pa.string()).take(pa.array(which))
    offsets = np.concatenate([[0], np.cumsum(valid.sum(axis=1))]).astype(np.int32)
    return pa.MapArray.from_arrays(pa.array(offsets), names, flat)


def _text_or_null(arr) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr.cast(pa.int64()).cast(pa.string()) if pa.types.is_timestamp(arr.type) else arr.cast(pa.string())


def _quantities(values: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(decimal128(38,9) quantities, reason text or null per row) for a value column."""
    if pa.types.is_string(values.type):
        # plain decimals that fit are cast exactly ("0.1" stays 0.1); other numbers (exponents,
        # more than 9 decimals) go through float and are rounded; other text is unbillable
        numeric = pc.match_substring_regex(values, _NUMERIC_TEXT).fill_null(False)
        fits = pc.match_substring_regex(values, _EXACT_TEXT).fill_null(False)
        exact = pc.if_else(fits, values, pa.scalar(None, pa.string())).cast(schemas.QUANTITY)
        approx, approx_bad = _from_float(_as_number(pc.if_else(pc.and_(numeric, pc.invert(fits)), values,
                                                                pa.scalar(None, pa.string()))))
        bad = pc.or_(pc.and_(pc.is_valid(values), pc.invert(numeric)), approx_bad)
        return _checked(pc.if_else(fits, exact, approx), bad)
    if pa.types.is_decimal(values.type) or pa.types.is_integer(values.type):
        try:
            return _checked(values.cast(schemas.QUANTITY), pa.array(np.zeros(len(values), bool)))
        except pa.ArrowInvalid:
            values = values.cast(pa.float64())
    return _checked(*_from_float(values))


def _from_float(values: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(quantities rounded to 9 places, unbillable flag): NaN, infinities and >= 1e28 are unbillable."""
    f = values.cast(pa.float64()).to_numpy(zero_copy_only=False)
    valid = values.is_valid().to_numpy(zero_copy_only=False)
    bad = valid & ~(np.isfinite(f) & (np.abs(np.where(np.isfinite(f), f, 0.0)) < 1e28))
    safe = np.where(bad | ~valid, 0.0, f)
    q = pc.round(pa.array(safe, mask=~valid), 9).cast(schemas.QUANTITY)
    return q, pa.array(bad)


def _checked(q: pa.Array, unparsable: pa.Array) -> tuple[pa.Array, pa.Array]:
    negative = pc.less(q, pa.scalar(0, schemas.QUANTITY)).fill_null(False)
    reason = pc.if_else(unparsable, pa.scalar("not a finite number in range"),
                        pc.if_else(negative, pa.scalar("negative"), pa.scalar(None, pa.string())))
    return pc.if_else(pc.is_valid(reason), pa.scalar(None, schemas.QUANTITY), q), reason


def derive(table: str, batch: pa.Table | pa.RecordBatch, meters: list[Meter] | list[CompiledMeter]) -> Derived:
    """Usage events for every meter reading ``table``, plus quarantine rows for unbillable values.

    Rows where the filter does not match, or the value (or unique_count value) is null, yield no
    usage; a negative, non-finite or out-of-range value is quarantined (``invalid_quantity``).
    """
    if isinstance(batch, pa.RecordBatch):
        batch = pa.Table.from_batches([batch])
    compiled = [m if isinstance(m, CompiledMeter) else compile_meter(m, i) for i, m in enumerate(meters)]
    usage, bad = [schemas.empty("usage_events")], [schemas.empty("quarantine")]
    for cm in compiled:
        if cm.meter.source != table or table not in TELEMETRY or batch.num_rows == 0:
            continue
        sub = batch.filter(mask(cm.filter, batch))
        sub = sub.filter(pc.is_valid(sub.column(_TIME[table])))
        if sub.num_rows == 0:
            continue
        u, q = _derive_meter(cm, table, sub)
        usage.append(u)
        bad.append(q)
    return Derived(pa.concat_tables(usage), pa.concat_tables(bad))


def derive_usage(table: str, batch: pa.Table | pa.RecordBatch, meters: list[Meter]) -> pa.Table:
    """``derive(...).usage``: USAGE_EVENTS rows (source "derived"). Prefer :func:`derive` to also
    write the quarantine rows of unbillable values."""
    return derive(table, batch, meters).usage


def _derive_meter(cm: CompiledMeter, table: str, sub: pa.Table) -> tuple[pa.Table, pa.Table]:
    m = cm.meter
    n = sub.num_rows
    time = sub.column(_TIME[table]).combine_chunks()
    meter_col = pa.array([m.name] * n, pa.string())
    if m.aggregation in ("count", "unique_count"):
        qty = pa.array(np.ones(n, np.int64)).cast(schemas.QUANTITY)
        reason = pa.nulls(n, pa.string())
    else:
        qty, reason = _quantities(_as_number_keep_text(evaluate(cm.value, sub)))
    keep = pc.is_valid(qty)
    if m.aggregation == "unique_count":
        distinct = _text_or_null(evaluate(cm.value, sub))
        keep = pc.and_(keep, pc.is_valid(distinct))
    dims = _dimensions(cm, sub)
    if m.aggregation == "unique_count":
        unit = {"hour": "h", "day": "D", "month": "M"}[m.period]
        period = pa.array(time.cast(pa.int64()).to_numpy(zero_copy_only=False).astype("datetime64[ns]")
                          .astype(f"datetime64[{unit}]").astype("datetime64[ns]").astype(np.int64))
        ids = hash_ids([meter_col, sub.column("tenant_id"), period, dims, distinct])
    elif table == "spans":
        by_span = hash_ids([meter_col, sub.column("trace_id"), sub.column("span_id")])
        by_content = hash_ids([meter_col, *(sub.column(c) for c in ("tenant_id", "service_name", "name",
                                                                       "start_time", "end_time"))])
        has_ids = pc.and_(pc.is_valid(sub.column("trace_id")), pc.is_valid(sub.column("span_id")))
        ids = pc.if_else(has_ids, by_span, by_content)
    else:
        ids = hash_ids([meter_col, *(sub.column(c) for c in _IDENTITY[table])])
    has_trace = table != "metric_points"
    usage = pa.table({
        "event_id": ids, "tenant_id": sub.column("tenant_id"), "meter": meter_col, "quantity": qty,
        "unit": pa.array([m.unit] * n, pa.string()), "time": time, "dimensions": dims,
        "source": pa.array(["derived"] * n, pa.string()), "service_name": sub.column("service_name"),
        "trace_id": sub.column("trace_id") if has_trace else pa.nulls(n, pa.string()),
        "span_id": sub.column("span_id") if has_trace else pa.nulls(n, pa.string()),
        "ingest_batch": sub.column("ingest_batch"),
    }).filter(keep)
    rejected = pc.is_valid(reason)
    bad = sub.filter(rejected)
    detail = pc.binary_join_element_wise(pa.scalar(f"meter {m.name}: value "), reason.filter(rejected), "")
    quarantine = schemas.conform("quarantine", pa.table({
        "table": pa.array([table] * bad.num_rows, pa.string()), "tenant_id": bad.column("tenant_id"),
        "service_name": bad.column("service_name"),
        "reason": pa.array([str(schemas.Reason.INVALID_QUANTITY)] * bad.num_rows, pa.string()),
        "processor": pa.array(["meters"] * bad.num_rows, pa.string()), "detail": detail,
        "time": time.filter(rejected), "ingest_batch": bad.column("ingest_batch"),
    }))
    return schemas.conform("usage_events", usage), quarantine


def _as_number_keep_text(arr) -> pa.Array:
    # text stays text so _quantities can read it exactly; other types become numbers
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr if pa.types.is_string(arr.type) or _is_num(arr.type) else arr.cast(pa.float64())
