"""Mergeable partial aggregates: Arrow tables of (keys..., sums...) that add up.

A partial is a table whose key columns identify a group and whose value columns are sums. Partials
from any number of batches, runs or stream panes merge by concatenating and summing per key, so
the combiner below is associative and commutative, as Beam requires.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tenantry import schemas


@dataclasses.dataclass(frozen=True)
class Family:
    """An aggregate family: its lake table, key columns and summed columns."""

    table: str
    keys: tuple[str, ...]
    sums: tuple[str, ...]

    @property
    def schema(self) -> pa.Schema:
        return schemas.LAKE_TABLES[self.table]


class Key(NamedTuple):
    """One group-by key of a batch: an integer code per row (0 <= code < ``card``) and how codes
    turn back into values (a dictionary array, or a function of the codes)."""

    codes: np.ndarray
    decode: pa.Array | Callable[[np.ndarray], pa.Array]
    card: int

    def values(self, codes: np.ndarray) -> pa.Array:
        if callable(self.decode):
            return self.decode(codes)
        return self.decode.take(pa.array(codes))

    def take(self, rows: np.ndarray) -> Key:
        return Key(self.codes[rows], self.decode, self.card)


def string_key(column) -> Key:
    """A :class:`Key` over a string column (its dictionary encoding)."""
    enc = pc.dictionary_encode(column)
    if isinstance(enc, pa.ChunkedArray):
        enc = enc.combine_chunks() if enc.num_chunks != 1 else enc.chunk(0)
    return Key(enc.indices.to_numpy().astype(np.int64), enc.dictionary, max(len(enc.dictionary), 1))


def time_key(ns: np.ndarray, unit_ns: int) -> Key:
    """A :class:`Key` over epoch nanoseconds floored to ``unit_ns`` (codes count units from the
    earliest)."""
    units = ns // unit_ns
    lo = int(units.min()) if len(units) else 0
    hi = int(units.max()) if len(units) else 0
    return Key(units - lo, lambda c: pa.array((c + lo) * unit_ns, schemas.TS), hi - lo + 1)


def distinct(packed: np.ndarray, radix: int) -> tuple[np.ndarray, np.ndarray]:
    """(distinct values of ``packed`` ascending, each row's index among them), for values in
    ``[0, radix)``: a bincount over the value range when it is small (linear time), else a sort."""
    if radix <= 8 * len(packed) + 65536:
        present = np.flatnonzero(np.bincount(packed, minlength=radix))
        lookup = np.zeros(radix, np.int64)
        lookup[present] = np.arange(len(present))
        return present, lookup[packed]
    return np.unique(packed, return_inverse=True)


@dataclasses.dataclass
class Groups:
    """Rows grouped by one or more keys: each row's group (``inverse``) and, per group, the code
    of every key. Built a key at a time (:meth:`by`), so families that share leading keys (hour,
    tenant, service) share that work; codes are packed as ``group * card + code`` and made dense
    again after every key, so they never overflow."""

    inverse: np.ndarray
    n: int
    codes: dict[str, np.ndarray]
    keys: dict[str, Key]  # for decoding the codes into values

    @classmethod
    def rows(cls, n_rows: int) -> Groups:
        """All rows in one group (the start of a chain of :meth:`by`)."""
        return cls(np.zeros(n_rows, np.int64), 1, {}, {})

    def by(self, name: str, key: Key) -> Groups:
        """These groups split further by ``key`` (whose codes are per row, like ``inverse``)."""
        uniq, inverse = distinct(self.inverse * key.card + key.codes, self.n * key.card)
        parent, code = np.divmod(uniq, key.card)
        codes = {k: v[parent] for k, v in self.codes.items()}
        codes[name] = code
        return Groups(inverse, len(uniq), codes, {**self.keys, name: key})

    def take(self, rows: np.ndarray) -> Groups:
        """The same groups over a subset of the rows (some groups may then have no row)."""
        return Groups(self.inverse[rows], self.n, self.codes, self.keys)

    def sums(self, values: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
        """Per group, the sum of ``values`` (one per row) over the rows where ``where`` is true."""
        if where is None:
            return np.bincount(self.inverse, weights=values, minlength=self.n)
        return np.bincount(self.inverse[where], weights=values[where], minlength=self.n)

    def table(self, family: Family, sums: dict[str, np.ndarray], keep: np.ndarray | None = None) -> pa.Table:
        """The family's partial: its key columns decoded and ``sums`` (one value per group, as
        from :meth:`sums`), for the groups in ``keep`` (a mask; default all)."""
        pick = (lambda a: a[keep]) if keep is not None else (lambda a: a)
        cols = {k: self.keys[k].values(pick(self.codes[k])) for k in family.keys}
        cols.update({c: pa.array(pick(v), pa.float64()) for c, v in sums.items()})
        return pa.table(cols).select(list(family.keys + family.sums))


def merge(family: Family, tables: Iterable[pa.Table]) -> pa.Table:
    """Sum partials of one family per key (vectorized group-by)."""
    # nullability differs between producers (a cast to the lake schema marks columns not-null);
    # it carries no data, so drop it before concatenating
    tables = [_nullable(t.select(list(family.keys + family.sums))) for t in tables if t is not None and t.num_rows]
    if not tables:
        return family.schema.empty_table().select(list(family.keys + family.sums))
    data = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    out = data.group_by(list(family.keys), use_threads=False).aggregate([(c, "sum") for c in family.sums])
    return out.rename_columns(list(family.keys) + list(family.sums)).select(list(family.keys + family.sums))


def _nullable(t: pa.Table) -> pa.Table:
    if all(f.nullable for f in t.schema):
        return t
    return t.cast(pa.schema([f.with_nullable(True) for f in t.schema]))


class MergePartials(beam.CombineFn):
    """Combines partial tables of one family; compacts the accumulator as it grows so memory
    stays bounded by the number of distinct keys, not by the number of inputs."""

    def __init__(self, family: Family, compact_rows: int = 200_000):
        self.family = family
        self.compact_rows = compact_rows

    def create_accumulator(self):
        return []

    def add_input(self, acc, table):
        acc.append(table)
        if sum(t.num_rows for t in acc) > self.compact_rows:
            acc[:] = [merge(self.family, acc)]
        return acc

    def merge_accumulators(self, accs):
        return [merge(self.family, [t for acc in accs for t in acc])]

    def extract_output(self, acc):
        return merge(self.family, acc)


class MergeTagged(beam.CombineFn):
    """Combines ``(family table name, partial table)`` values of one key (the family).

    ``mergers`` maps a family's table name to how its partials merge (sum per key for partial
    aggregates, concatenation for evidence rows); the accumulator is compacted as it grows.
    """

    def __init__(self, mergers: dict, compact_rows: int = 200_000):
        self.mergers = mergers
        self.compact_rows = compact_rows

    def create_accumulator(self):
        return [None, []]

    def _compact(self, acc):
        if sum(t.num_rows for t in acc[1]) > self.compact_rows:
            acc[1] = [self.mergers[acc[0]](acc[1])]
        return acc

    def add_input(self, acc, value):
        name, table = value
        acc[0] = name
        acc[1].append(table)
        return self._compact(acc)

    def merge_accumulators(self, accs):
        accs = list(accs)
        name = next((a[0] for a in accs if a[0] is not None), None)
        out = [name, [t for a in accs for t in a[1]]]
        return self._compact(out) if name is not None else out

    def extract_output(self, acc):
        return self.mergers[acc[0]](acc[1]) if acc[0] is not None else None


def as_part(family: str, part: str, table: pa.Table):
    """A per-batch partial as a lake chunk ``(family, part name, rows)``; its lineage
    (``ingest_batch``) is the batch it was computed from."""
    if "ingest_batch" not in table.column_names:
        # one value for every row: dictionary-encoded here (4 bytes a row), made plain text by the
        # lake writer's conform on its I/O thread, not on the thread that computes the partials
        table = table.append_column("ingest_batch", pa.DictionaryArray.from_arrays(
            pa.array(np.zeros(table.num_rows, np.int32)), pa.array([part], pa.string())))
    return family, f"{part}-{family}", table


class MergeFamilies(beam.PTransform):
    """``(family, part, partial)`` chunks (or ``(family, partial)`` pairs) in → one
    ``(family, merged partial)`` per family and window.

    The batch pipeline does not need it (per-batch partials are written as they are: the views
    sum them, and a run-wide merge would hold a whole run's partials in one element); it is for
    consumers that want one table per family, such as tests and compaction.

    One combine for every family at once keeps the pipeline graph small (each CombineGlobally is
    a dozen steps to build and to run, per micro-batch in the stream).
    """

    def __init__(self, mergers: dict):
        super().__init__()
        self.mergers = dict(mergers)

    def expand(self, pairs):
        return (
            pairs
            | "KeyByFamily" >> beam.Map(lambda nt: (nt[0], (nt[0], nt[-1])))
            | "Merge" >> beam.CombinePerKey(MergeTagged(self.mergers))
            | "DropEmpty" >> beam.Filter(lambda kv: kv[1] is not None)
        )


def summing(family: Family):
    """The merger of a partial-aggregate family (sum per key)."""
    return _Summing(family)


class _Summing:
    def __init__(self, family: Family):
        self.family = family

    def __call__(self, tables):
        return merge(self.family, tables)
