"""Reading FOCUS (CSV, Parquet), AWS CUR 2.0 (with split cost allocation), cost.csv, local and S3."""

from __future__ import annotations

import gzip
import socket
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import cur_row, focus_row, write_cur, write_focus_csv

from tenantry.cost import readers
from tenantry.cost.rules import parse_cost

CFG = parse_cost({})


def parse_path(p, cfg=CFG):
    files = list(readers.discover([str(p)], cfg))
    assert len(files) == 1
    return readers.parse(files[0], cfg)


def test_focus_csv_amounts_are_exact_and_tags_parsed(tmp_path):
    rows = [focus_row("Amazon EC2", "0.1234567891", billed="9", tags={"tenant": "acme", "n": 3}),
            focus_row("Amazon S3", "12345678901234567890.123456789", category="Credit")]
    p = parse_path(write_focus_csv(tmp_path / "f.csv", rows))
    t = p.lines.to_pylist()
    assert p.source_format == "focus"
    assert t[0]["amount"] == Decimal("0.123456789")  # EffectiveCost by default, rounded to 9 places
    assert t[1]["amount"] == Decimal("12345678901234567890.123456789")  # never through a float
    assert t[0]["tenant_tag"] == "acme" and dict(t[0]["tags"]) == {"tenant": "acme", "n": "3"}
    assert t[1]["category"] == "credit" and t[0]["day"].isoformat() == "2026-11-03"


def test_focus_billed_cost_column_is_selectable(tmp_path):
    f = write_focus_csv(tmp_path / "f.csv", [focus_row("EC2", "1", billed="2.5")])
    p = parse_path(f, parse_cost({"focus_cost_column": "BilledCost"}))
    assert p.lines.column("amount").to_pylist() == [Decimal("2.5")]


def test_focus_parquet_with_map_tags_and_gzip_csv(tmp_path):
    rows = [focus_row("EC2", "1.5", tags={"user:tenant": "globex"})]
    csv_path = write_focus_csv(tmp_path / "f.csv", rows)
    gz = tmp_path / "g.csv.gz"
    gz.write_bytes(gzip.compress(csv_path.read_bytes()))
    assert parse_path(gz).lines.column("tenant_tag").to_pylist() == ["globex"]
    schema = pa.schema([pa.field(k, pa.map_(pa.string(), pa.string()) if k == "Tags" else
                                 pa.decimal128(20, 10) if k == "EffectiveCost" else pa.string()) for k in rows[0]])
    t = pa.Table.from_pylist([{**r, "Tags": [("user:tenant", "globex")], "EffectiveCost": Decimal("1.5")}
                              for r in rows], schema=schema)
    pq.write_table(t, tmp_path / "f.parquet")
    p = parse_path(tmp_path / "f.parquet")
    assert p.lines.column("tenant_tag").to_pylist() == ["globex"]
    assert p.lines.column("amount").to_pylist() == [Decimal("1.5")]


def test_cur2_split_cost_allocation_moves_cost_to_tasks_without_counting_twice(tmp_path):
    rows = [
        cur_row(1, "AmazonEC2", 1.00, resource="i-1"),
        cur_row(2, "AmazonECS", 0.0, resource="task-a", parent="i-1", split=0.60, unused=0.15, tags={"user_tenant": "acme"}),
        cur_row(3, "AmazonECS", 0.0, resource="task-b", parent="i-1", split=0.20, unused=0.05, tags={"user_tenant": "globex"}),
        cur_row(4, "AmazonECS", 0.0, resource="task-c", parent="i-gone", split=0.30, unused=0.0),
        cur_row(5, "AmazonRDS", 2.50, resource="db-1", tags={"user_tenant": "globex"}),
        cur_row(6, "AmazonEC2", 0.42, line_type="Tax"),
        cur_row(7, "AmazonEC2", -0.10, line_type="Credit"),
    ]
    p = parse_path(write_cur(tmp_path / "cur.parquet", rows))
    got = [(r["resource_id"], r["category"], r["amount"], r["tenant_tag"]) for r in p.lines.to_pylist()]
    assert got == [
        ("i-1", "split_residual", Decimal("0"), None),
        ("task-a", "usage", Decimal("0.6"), "acme"), ("task-a", "idle", Decimal("0.15"), "acme"),
        ("task-b", "usage", Decimal("0.2"), "globex"), ("task-b", "idle", Decimal("0.05"), "globex"),
        ("task-c", "usage", Decimal("0"), None),  # parent not in this file: its own unblended cost only
        ("db-1", "usage", Decimal("2.5"), "globex"),
        (None, "tax", Decimal("0.42"), None), (None, "credit", Decimal("-0.1"), None),
    ]
    total = sum(r["line_item_unblended_cost"] for r in rows)
    assert sum(p.lines.column("amount").to_pylist()) == Decimal(str(round(total, 9)))
    assert p.stats["split_rows_without_parent"] == 1
    assert p.source_format == "cur2" and set(p.lines.column("service").to_pylist()) >= {"AmazonEC2", "AmazonECS"}


def test_simple_cost_csv(tmp_path):
    f = tmp_path / "cost.csv"
    f.write_text("day,service,amount,tenant\n2026-11-03,api,1.10,acme\n2026-11-04,db,0.000000001,\n")
    p = parse_path(f)
    assert p.source_format == "simple"
    assert [(r["service"], r["amount"], r["tenant_tag"], r["currency"]) for r in p.lines.to_pylist()] == [
        ("api", Decimal("1.1"), "acme", "USD"), ("db", Decimal("0.000000001"), None, "USD")]


@pytest.mark.parametrize("bad,where", [
    ("2026-11-03,api,abc", "cost 'abc' is not a decimal number"),
    ("yesterday,api,1", "charge period start 'yesterday' is not a timestamp"),
    ("2026-11-03,,1", "service name is empty"),
    ("2026-11-03,api,NaN", "is not a decimal number"),
])
def test_a_bad_row_rejects_the_file_naming_row_and_field(tmp_path, bad, where):
    f = tmp_path / "cost.csv"
    f.write_text(f"day,service,amount\n2026-11-03,ok,1\n{bad}\n")
    with pytest.raises(readers.CostInputError, match="data row 2") as e:
        parse_path(f)
    assert where in str(e.value) and str(f) in str(e.value)


@pytest.mark.parametrize("content", [b"", b"a,b,c\n1,2,3\n", b"\x00\x01binary", b"PAR1garbage"])
def test_unknown_or_broken_files_are_refused_with_the_file_named(tmp_path, content):
    f = tmp_path / "x.csv"
    f.write_bytes(content)
    with pytest.raises(readers.CostInputError, match="x.csv"):
        parse_path(f)


def test_empty_folder_and_missing_path_are_errors(tmp_path):
    with pytest.raises(readers.CostInputError, match="no cost files"):
        list(readers.discover([str(tmp_path)], CFG))
    with pytest.raises(readers.CostInputError, match="no such file"):
        list(readers.discover([str(tmp_path / "nope.csv")], CFG))


def test_tags_of_an_unsupported_type_are_refused(tmp_path):
    t = pa.Table.from_pylist([{**focus_row("EC2", "1"), "Tags": 5}])
    pq.write_table(t, tmp_path / "f.parquet")
    with pytest.raises(readers.CostInputError, match="f.parquet: tags column of type int64"):
        parse_path(tmp_path / "f.parquet")


def test_malformed_tags_json_keeps_the_line_untagged(tmp_path):
    row = focus_row("EC2", "1")
    row["Tags"] = '{"tenant": "acme"'  # truncated JSON
    p = parse_path(write_focus_csv(tmp_path / "f.csv", [row]))
    assert p.lines.column("tenant_tag").to_pylist() == [None]


@pytest.fixture
def moto_s3(monkeypatch):
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    yield f"http://127.0.0.1:{port}"
    server.stop()


def test_s3_prefix_read_through_a_configurable_endpoint(tmp_path, moto_s3):
    cfg = parse_cost({"s3": {"endpoint_url": moto_s3, "region": "us-east-1"}})
    client = readers.s3_client(cfg)
    client.create_bucket(Bucket="billing")
    cur = write_cur(tmp_path / "cur.parquet", [cur_row(1, "AmazonEC2", 1.25, resource="i-1")])
    focus = write_focus_csv(tmp_path / "f.csv", [focus_row("EC2", "2")])
    client.put_object(Bucket="billing", Key="exports/cur/part-0.parquet", Body=cur.read_bytes())
    client.put_object(Bucket="billing", Key="exports/focus/f.csv", Body=focus.read_bytes())
    client.put_object(Bucket="billing", Key="exports/manifest.json", Body=b"{}")  # not a cost file
    files = list(readers.discover(["s3://billing/exports/"], cfg))
    assert [f.key for f in files] == ["s3://billing/exports/cur/part-0.parquet", "s3://billing/exports/focus/f.csv"]
    assert [readers.parse(f, cfg).lines.column("amount").to_pylist() for f in files] == [[Decimal("1.25")], [Decimal("2")]]
    with pytest.raises(readers.CostInputError, match="no cost files"):
        list(readers.discover(["s3://billing/nothing/"], cfg))
    with pytest.raises(readers.CostInputError, match="S3 read failed"):
        list(readers.discover(["s3://no-such-bucket/x"], cfg))
