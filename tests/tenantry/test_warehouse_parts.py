"""Warehouse part files: what a part holds reads back exactly, with the encodings chosen per column."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from tenantry import schemas, synthetic
from tenantry.warehouse import Warehouse, _leaf_paths


def _encodings(path) -> dict[str, tuple]:
    meta = pq.ParquetFile(path).metadata.row_group(0)
    return {meta.column(i).path_in_schema: meta.column(i).encodings for i in range(meta.num_columns)}


def test_leaf_paths_of_nested_fields():
    assert _leaf_paths(pa.field("attributes", schemas.ATTRS)) == ["attributes.key_value.key", "attributes.key_value.value"]
    assert _leaf_paths(pa.field("tags", pa.list_(pa.string()))) == ["tags.list.element"]
    assert _leaf_paths(pa.field("s", pa.struct([("a", pa.int32()), ("m", pa.map_(pa.string(), pa.int64()))]))) == [
        "s.a", "s.m.key_value.key", "s.m.key_value.value"]
    assert _leaf_paths(pa.field("tenant_id", pa.string())) == ["tenant_id"]


def test_spans_part_round_trips_with_dictionary_encoded_attribute_maps(tmp_path):
    spans = synthetic.spans(5_000, tenants=7, seed=3)
    # hostile attribute content: unicode, SQL-looking, empty keys' values, a null map, an empty map,
    # and values that are all distinct (the writer falls back to plain once the dictionary is big)
    odd = [[("ünïcode", "值"), ("sql", "'; drop table spans; --"), ("empty", "")], None, [],
           [("id", "x" * 10_000 + str(i)) for i in range(300)]]
    attrs = pa.array(odd + [None] * (spans.num_rows - len(odd)), schemas.ATTRS)
    attrs = pa.concat_arrays([attrs.slice(0, len(odd)), spans.column("attributes").combine_chunks().slice(len(odd))])
    spans = spans.set_column(spans.schema.get_field_index("attributes"), "attributes", attrs)
    wh = Warehouse.open(tmp_path)
    path = wh.write_part("spans", "r1", "p0", spans)
    back = pq.read_table(path)
    assert back.equals(schemas.conform("spans", spans))
    enc = _encodings(path)
    for leaf in ("attributes.key_value.key", "attributes.key_value.value"):
        assert "RLE_DICTIONARY" in enc[leaf], (leaf, enc[leaf])
    # random ids stay plain: a dictionary would only cost
    assert "RLE_DICTIONARY" not in enc["trace_id"]
