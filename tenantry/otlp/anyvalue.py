"""OTLP ``AnyValue`` as the text stored in ``map<string, string>`` attribute columns.

The promise (see ``tenantry.schemas``): strings as they are, bools ``true``/``false``, ints as
decimal text, doubles as Python ``repr`` text (``0.1``, ``nan``, ``inf``), bytes as base64, and
arrays / key-value lists as compact JSON of their plain values. An unset value is ``None``.
"""

from __future__ import annotations

import base64
import json
import math

from google.protobuf.message import DecodeError

from tenantry.otlp.messages import KeyValue

#: Nesting of array / kvlist values deeper than this is rejected (a hostile-input guard; real
#: attributes nest a few levels at most, and upb stops whole messages at depth 100 anyway).
MAX_VALUE_DEPTH = 64


class AttributeValueError(ValueError):
    """One attribute could not be decoded (malformed bytes, invalid UTF-8, nesting too deep)."""


def plain_value(value, depth: int = 0):
    """The JSON-ready Python value of an AnyValue (non-finite doubles become their text)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        d = value.double_value
        return d if math.isfinite(d) else repr(d)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if kind == "string_value_strindex":
        return value.string_value_strindex
    if depth >= MAX_VALUE_DEPTH:
        raise AttributeValueError(f"array/kvlist value nested deeper than {MAX_VALUE_DEPTH} levels")
    if kind == "array_value":
        return [plain_value(v, depth + 1) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: plain_value(kv.value, depth + 1) for kv in value.kvlist_value.values}
    return None  # a oneof member added by a newer proto: unknown, kept as null rather than guessed


def value_text(value) -> str | None:
    """The attribute-map text of an AnyValue (``None`` when no value is set)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "int_value":
        return str(value.int_value)
    if kind == "double_value":
        return repr(value.double_value)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if kind == "string_value_strindex":
        return str(value.string_value_strindex)
    return json.dumps(plain_value(value), separators=(",", ":"), ensure_ascii=False)


def decode_key_value(raw: bytes) -> tuple[str, str | None]:
    """(key, value text) of one serialized KeyValue; AttributeValueError when it is malformed."""
    try:
        kv = KeyValue.FromString(raw)
    except DecodeError as e:
        raise AttributeValueError(f"attribute is not a valid KeyValue ({e})") from None
    except RecursionError:
        raise AttributeValueError("attribute value nested too deeply") from None
    return kv.key, (value_text(kv.value) if kv.HasField("value") else None)
