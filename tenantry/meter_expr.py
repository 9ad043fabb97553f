"""The meter expression language: ``filter``, ``value`` and ``group_by`` of a meter definition.

A small, safe language, parsed here (tokenizer and recursive descent, never ``eval``) and evaluated
on whole Arrow columns: ``== != < <= > >=``, ``and or not``, parentheses, ``startswith endswith
contains``, ``in [..]``, string/number literals, ``true false``, columns of the source table
(optionally prefixed ``span.`` / ``log.`` / ``metric.`` / ``event.``) and map lookups
``attributes["k"]``, ``resource["k"]``, ``dimensions["k"]``. A string compared with a number is
read as a number (text that is not a number never matches). A null never matches. Errors name the
meter and the character position. Input is bounded (``MAX_FILTER_CHARS``, ``MAX_DEPTH``).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tenantry import schemas

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

