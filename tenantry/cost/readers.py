"""Cost files in, normalized cost lines out: FOCUS 1.x (CSV/Parquet), AWS CUR 2.0 (Parquet), cost.csv.

Sources are local files or folders, or ``s3://bucket/prefix`` (boto3; ``cost.s3.endpoint_url``
or the standard ``AWS_ENDPOINT_URL`` picks a non-AWS endpoint such as moto or MinIO). Files are
``*.csv``, ``*.csv.gz`` and ``*.parquet``; the format is recognised from the columns:

- FOCUS: ``ChargePeriodStart``, ``ChargePeriodEnd``, ``ServiceName``, ``BillingCurrency``,
  ``ChargeCategory``, ``ResourceId``, ``Tags`` (JSON object in CSV, a map in Parquet) and the cost
  column chosen by ``cost.focus_cost_column`` (``EffectiveCost`` by default, or ``BilledCost``);
- CUR 2.0: ``line_item_usage_start_date``/``_end_date``, ``line_item_unblended_cost``,
  ``line_item_currency_code``, ``line_item_resource_id``, ``line_item_line_item_type``,
  ``product_servicecode`` (``line_item_product_code`` when empty), ``resource_tags``;
- cost.csv: ``day``, ``service``, ``amount`` and optionally ``currency``, ``tenant``, ``resource_id``.

Amounts become ``decimal(38, 9)`` (CUR's doubles are rounded half-up to 9 places; text is
read as text, never through a float). A row with an unreadable amount, time or service rejects
the whole file with the row and column named: a half-read cost file would not add up.

AWS split cost allocation (ECS/EKS): a row with ``split_line_item_parent_resource_id`` becomes
a ``usage`` line of ``split_line_item_split_cost`` (plus its own unblended cost) and an ``idle``
line of ``split_line_item_unused_cost``; its parent instance's line keeps only what the split
rows do not cover (category ``split_residual``), so the file's total is unchanged and nothing is
counted twice. A split row whose parent is not in the same file keeps only its own unblended
cost (counted as ``split_rows_without_parent`` in the report) for the same reason.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Iterator

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tenantry.cost.rules import CostConfig
from tenantry.schemas import ATTRS

_SUFFIXES = (".csv", ".csv.gz", ".parquet")
_MAX_ERRORS_SHOWN = 5


class CostInputError(ValueError):
    """A cost file or source cannot be read; the message names the file, row and column."""


@dataclasses.dataclass(frozen=True)
class CostFile:
    key: str  # absolute path or s3:// URL: identifies the source across re-deliveries
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclasses.dataclass
class Parsed:
    lines: pa.Table  # normalized columns (see NORMALIZED)
    source_format: str
    stats: dict


NORMALIZED = ["charge_period_start", "charge_period_end", "day", "service", "category",
              "resource_id", "tenant_tag", "tags", "amount", "currency"]


# -- sources ------------------------------------------------------------------------------------


def _is_cost_file(name: str) -> bool:
    n = name.lower()
    return n.endswith(_SUFFIXES) and not Path(n).name.startswith((".", "_"))


def discover(paths: list[str], cfg: CostConfig) -> Iterator[CostFile]:
    """Every cost file under ``paths`` (files, folders, s3:// prefixes), in a stable order."""
    for p in paths:
        p = str(p)
        if p.startswith("s3://"):
            yield from _s3_files(p, cfg)
            continue
        path = Path(p)
        if path.is_dir():
            files = sorted(f for f in path.rglob("*") if f.is_file() and _is_cost_file(f.name))
            if not files:
                raise CostInputError(f"{path}: no cost files (*.csv, *.csv.gz, *.parquet) in this folder")
        elif path.is_file():
            files = [path]
        else:
            raise CostInputError(f"{path}: no such file or folder")
        for f in files:
            yield CostFile(str(f.resolve()), f.read_bytes())


def s3_client(cfg: CostConfig):
    import boto3

    kwargs = {}
    endpoint = cfg.s3.endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        kwargs["endpoint_url"] = endpoint
    if cfg.s3.region:
        kwargs["region_name"] = cfg.s3.region
    return boto3.client("s3", **kwargs)


def _s3_files(url: str, cfg: CostConfig) -> Iterator[CostFile]:
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    if not bucket:
        raise CostInputError(f"{url}: expected s3://bucket/prefix")
    client = s3_client(cfg)
    try:
        keys = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys += [o["Key"] for o in page.get("Contents", []) if _is_cost_file(o["Key"].rsplit("/", 1)[-1])]
        if not keys:
            raise CostInputError(f"{url}: no cost files (*.csv, *.csv.gz, *.parquet) under this prefix")
        for key in sorted(keys):
            body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
            yield CostFile(f"s3://{bucket}/{key}", body)
    except (BotoCoreError, ClientError) as e:
        raise CostInputError(f"{url}: S3 read failed ({e}); check the bucket, credentials and cost.s3.endpoint_url") from None


# -- decoding -----------------------------------------------------------------------------------


def _read_table(f: CostFile) -> pa.Table:
    name = f.key.lower()
    try:
        if name.endswith(".parquet"):
            return pq.read_table(io.BytesIO(f.data))
        data = gzip.decompress(f.data) if name.endswith(".gz") else f.data
        text_head = data[:65536].decode("utf-8-sig", errors="replace").splitlines()
        header = next(csv.reader(text_head[:1]), []) if text_head else []
        if not header:
            raise CostInputError(f"{f.key}: empty file (no header row)")
        # every column as text: amounts must never pass through a float
        return pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(encoding="utf8"),
            convert_options=pacsv.ConvertOptions(column_types={h: pa.string() for h in header},
                                                 strings_can_be_null=True),
        )
    except CostInputError:
        raise
    except (pa.ArrowInvalid, OSError, EOFError, UnicodeDecodeError) as e:
        raise CostInputError(f"{f.key}: not a readable CSV or Parquet file ({e})") from None


def detect_format(columns: list[str]) -> str | None:
    cols = set(columns)
    if {"ChargePeriodStart", "ServiceName"} <= cols:
        return "focus"
    if {"line_item_usage_start_date", "line_item_unblended_cost"} <= cols:
        return "cur2"
    if {"day", "service", "amount"} <= cols:
        return "simple"
    return None


def _tags_to_map(col: pa.ChunkedArray) -> pa.Array:
    """FOCUS ``Tags``: JSON text (CSV) or a map/struct (Parquet) → map<string, string>.

    JSON is parsed once per distinct text (tags repeat heavily); non-string values keep their
    JSON text. Unparseable or non-object text becomes an empty map (the line stays, untagged).
    """
    if not (pa.types.is_map(col.type) or pa.types.is_struct(col.type) or pa.types.is_string(col.type)
            or pa.types.is_large_string(col.type) or pa.types.is_null(col.type)):
        raise CostInputError(f"tags column of type {col.type} is not supported (expected JSON text or a map)")
    if pa.types.is_map(col.type):
        return col.cast(ATTRS).combine_chunks()
    if pa.types.is_struct(col.type):
        rows = col.to_pylist()
        return pa.array([None if r is None else [(k, _text(v)) for k, v in r.items() if v is not None] for r in rows], ATTRS)
    enc = col.cast(pa.string()).combine_chunks().dictionary_encode()
    parsed = []
    for s in enc.dictionary.to_pylist():
        try:
            obj = json.loads(s) if s else {}
        except (json.JSONDecodeError, TypeError, RecursionError):
            obj = {}
        parsed.append([(str(k), _text(v)) for k, v in obj.items() if v is not None] if isinstance(obj, dict) else [])
    idx = enc.indices.to_pylist()
    return pa.array([None if i is None else parsed[i] for i in idx], ATTRS)


def _text(v) -> str:
    return v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))


def _con() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:")
    con.execute("set timezone = 'UTC'")
    return con


def _focus_sql(cost_col: str) -> str:
    # cost_col comes from a Literal in the config model, never from the file
    return f"""
    select row_number() over () as _row,
        try_cast("ChargePeriodStart" as timestamptz) as charge_period_start,
        coalesce(try_cast("ChargePeriodEnd" as timestamptz),
                 try_cast("ChargePeriodStart" as timestamptz) + interval 1 day) as charge_period_end,
        "ServiceName"::varchar as service,
        lower(coalesce(nullif("ChargeCategory"::varchar, ''), 'usage')) as category,
        nullif("ResourceId"::varchar, '') as resource_id,
        _tags as tags,
        try_cast(trim("{cost_col}"::varchar) as decimal(38, 9)) as amount,
        upper(coalesce(nullif("BillingCurrency"::varchar, ''), $currency)) as currency,
        "ChargePeriodStart"::varchar as _raw_time, "{cost_col}"::varchar as _raw_amount
    from src
    """


_SIMPLE_SQL = """
    select row_number() over () as _row,
        try_cast("day" as date)::timestamptz as charge_period_start,
        try_cast("day" as date)::timestamptz + interval 1 day as charge_period_end,
        nullif(trim("service"::varchar), '') as service,
        'usage' as category,
        {resource} as resource_id,
        _tags as tags,
        try_cast(trim("amount"::varchar) as decimal(38, 9)) as amount,
        upper(coalesce({currency}, $currency)) as currency,
        "day"::varchar as _raw_time, "amount"::varchar as _raw_amount
    from src
"""


def _cur_sql(columns: set[str]) -> str:
    has_split = {"split_line_item_parent_resource_id", "split_line_item_split_cost",
                 "split_line_item_unused_cost"} <= columns
    service = ("coalesce(nullif(product_servicecode::varchar, ''), line_item_product_code::varchar)"
               if "product_servicecode" in columns and "line_item_product_code" in columns
               else "product_servicecode::varchar" if "product_servicecode" in columns
               else "line_item_product_code::varchar")
    end = ("line_item_usage_end_date" if "line_item_usage_end_date" in columns
           else "line_item_usage_start_date + interval 1 hour")
    ltype = "line_item_line_item_type::varchar" if "line_item_line_item_type" in columns else "'Usage'"
    resource = "nullif(line_item_resource_id::varchar, '')" if "line_item_resource_id" in columns else "null"
    currency = "line_item_currency_code::varchar" if "line_item_currency_code" in columns else "null"
    base = f"""
    with b as (
        select row_number() over () as _row,
            try_cast(line_item_usage_start_date::varchar as timestamptz) as charge_period_start,
            try_cast({end}::varchar as timestamptz) as charge_period_end,
            {service} as service, {ltype} as _type, {resource} as resource_id, _tags as tags,
            try_cast(line_item_unblended_cost as decimal(38, 9)) as unblended,
            upper(coalesce(nullif({currency}, ''), $currency)) as currency,
            line_item_usage_start_date::varchar as _raw_time,
            line_item_unblended_cost::varchar as _raw_amount,
            {"nullif(split_line_item_parent_resource_id::varchar, '')" if has_split else "null::varchar"} as _parent,
            {"coalesce(try_cast(split_line_item_split_cost as decimal(38, 9)), 0)" if has_split else "0::decimal(38,9)"} as _split,
            {"coalesce(try_cast(split_line_item_unused_cost as decimal(38, 9)), 0)" if has_split else "0::decimal(38,9)"} as _unused
        from src
    ),
    parents as (select distinct resource_id, charge_period_start from b where _parent is null and resource_id is not null),
    children as (
        select b.*, p.resource_id is not null as _has_parent
        from b left join parents p on p.resource_id = b._parent and p.charge_period_start = b.charge_period_start
        where b._parent is not null
    ),
    covered as (
        select _parent as resource_id, charge_period_start, sum(_split + _unused) as covered
        from children where _has_parent group by all
    ),
    out as (
        select b._row, 0 as _sub, b.charge_period_start, b.charge_period_end, b.service,
               case when c.covered is not null then 'split_residual' else {_CUR_CATEGORY} end as category,
               b.resource_id, b.tags, b.unblended - coalesce(c.covered, 0) as amount, b.currency,
               b._raw_time, b._raw_amount
        from b left join covered c on c.resource_id = b.resource_id and c.charge_period_start = b.charge_period_start
        where b._parent is null
        union all
        select _row, 0, charge_period_start, charge_period_end, service, 'usage', resource_id, tags,
               unblended + case when _has_parent then _split else 0 end, currency, _raw_time, _raw_amount
        from children
        union all
        select _row, 1, charge_period_start, charge_period_end, service, 'idle', resource_id, tags,
               _unused, currency, _raw_time, _raw_amount
        from children where _has_parent and _unused <> 0
    )
    select * exclude (_sub) from out order by _row, _sub
    """
    return base


# CUR line item types → FOCUS-like categories (a credit or refund lowers cost; tax is tax)
_CUR_CATEGORY = """case lower(b._type)
        when 'tax' then 'tax' when 'credit' then 'credit' when 'refund' then 'credit'
        when 'fee' then 'purchase' when 'rifee' then 'purchase' when 'savingsplanrecurringfee' then 'purchase'
        when 'savingsplanupfrontfee' then 'purchase' when 'bundleddiscount' then 'credit'
        when 'discount' then 'credit' when 'edpdiscount' then 'credit'
        else 'usage' end"""


def parse(f: CostFile, cfg: CostConfig) -> Parsed:
    """Decode one cost file into normalized lines. Raises :class:`CostInputError`."""
    table = _read_table(f)
    fmt = detect_format(table.column_names)
    if fmt is None:
        raise CostInputError(
            f"{f.key}: not a FOCUS, AWS CUR 2.0 or cost.csv file (columns: "
            f"{', '.join(table.column_names[:12])}{', ...' if table.num_columns > 12 else ''}); "
            "a cost.csv needs the columns day, service, amount"
        )
    cols = set(table.column_names)
    try:
        return _parse_table(f, cfg, table, fmt, cols)
    except CostInputError as e:
        raise e if str(e).startswith(f.key) else CostInputError(f"{f.key}: {e}") from None


def _parse_table(f: CostFile, cfg: CostConfig, table: pa.Table, fmt: str, cols: set[str]) -> Parsed:
    if fmt == "focus":
        if cfg.focus_cost_column not in cols:
            raise CostInputError(f"{f.key}: FOCUS file has no {cfg.focus_cost_column} column "
                                 "(set cost.focus_cost_column to BilledCost or EffectiveCost)")
        tags = _tags_to_map(table.column("Tags")) if "Tags" in cols else pa.nulls(table.num_rows, ATTRS)
        sql = _focus_sql(cfg.focus_cost_column)
    elif fmt == "cur2":
        tags = (_tags_to_map(table.column("resource_tags")) if "resource_tags" in cols
                else pa.nulls(table.num_rows, ATTRS))
        sql = _cur_sql(cols)
    else:
        tags = (pa.array([None if t is None else [("tenant", t)] for t in table.column("tenant").to_pylist()], ATTRS)
                if "tenant" in cols else pa.nulls(table.num_rows, ATTRS))
        sql = _SIMPLE_SQL.format(
            resource="nullif(resource_id::varchar, '')" if "resource_id" in cols else "null::varchar",
            currency="nullif(currency::varchar, '')" if "currency" in cols else "null::varchar",
        )
    src = table.append_column("_tags", tags)
    con = _con()
    try:
        con.register("src", src)
        out = con.sql(sql, params={"currency": cfg.currency}).to_arrow_table()
        _check(f.key, con, out)
        keys = cfg.tag_keys if fmt != "simple" else ["tenant"]
        con.register("norm", out)
        res = con.sql(
            "select charge_period_start, charge_period_end, (charge_period_start at time zone 'UTC')::date as day, "
            "service, category, resource_id, coalesce(tags[$k0], tags[$k1], tags[$k2]) as tenant_tag, tags, "
            "amount, currency from norm",
            params={"k0": keys[0], "k1": keys[-2] if len(keys) > 1 else keys[0], "k2": keys[-1]},
        ).to_arrow_table()
        stats = {"rows": table.num_rows, "lines": res.num_rows}
        if fmt == "cur2" and "split_line_item_parent_resource_id" in cols:
            stats["split_rows_without_parent"] = _orphans(con)
        return Parsed(res, fmt, stats)
    finally:
        con.close()


def _orphans(con) -> int:
    return con.execute(
        "select count(*) from src s where nullif(split_line_item_parent_resource_id::varchar, '') is not null "
        "and not exists (select 1 from src p where p.line_item_resource_id = s.split_line_item_parent_resource_id "
        "and p.line_item_usage_start_date = s.line_item_usage_start_date "
        "and nullif(p.split_line_item_parent_resource_id::varchar, '') is null)"
    ).fetchone()[0]


def _check(key: str, con, out: pa.Table) -> None:
    con.register("chk", out)
    bad = con.execute(
        "select _row, case when charge_period_start is null then 'time' when amount is null then 'amount' "
        "when service is null or service = '' then 'service' "
        "when charge_period_end < charge_period_start then 'period' end as what, _raw_time, _raw_amount "
        "from chk where charge_period_start is null or amount is null or service is null or service = '' "
        "or charge_period_end < charge_period_start order by _row limit 6"
    ).fetchall()
    if not bad:
        return
    msgs = []
    for row, what, raw_time, raw_amount in bad[:_MAX_ERRORS_SHOWN]:
        detail = {"time": f"charge period start {raw_time!r} is not a timestamp",
                  "amount": f"cost {raw_amount!r} is not a decimal number",
                  "service": "service name is empty",
                  "period": "charge period ends before it starts"}[what]
        msgs.append(f"{key}: data row {row}: {detail}")
    more = " (and more)" if len(bad) > _MAX_ERRORS_SHOWN else ""
    raise CostInputError("\n".join(msgs) + more + "\nfix the file and ingest it again; nothing from it was ingested")
