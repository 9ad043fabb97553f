"""Ingest into a warehouse whose telemetry drivers are known; views, conservation, idempotence, CLI."""

from __future__ import annotations

from decimal import Decimal

import pyarrow as pa
import pytest
from click.testing import CliRunner
from conftest import DAY, cur_row, focus_row, make_cfg, ts, write_cur, write_focus_csv

from tenantry import schemas
from tenantry.cost import CostInputError, ingest, reallocate
from tenantry.cost.cli import cost as cost_cli

RULES = {"rules": [
    {"name": "tagged", "method": "direct"},
    {"name": "compute", "match": {"services": ["Amazon EC2", "AmazonEC2"]}, "method": "proportional",
     "driver": "duration", "driver_services": ["shop"]},
    {"name": "db", "match": {"services": ["Amazon RDS"]}, "method": "proportional", "driver": "requests"},
    {"name": "tokens", "match": {"services": ["Bedrock"]}, "method": "proportional", "driver": "meter:llm_tokens"},
    {"name": "egress", "match": {"services": ["Data Transfer"]}, "method": "proportional",
     "driver": "attribute:http.response.body.size"},
    {"name": "dynamo", "match": {"services": ["DynamoDB"]}, "method": "proportional", "driver": "dynamodb_capacity"},
    {"name": "shared", "match": {"categories": ["idle", "split_residual"]}, "method": "shared"},
]}

FOCUS = [
    focus_row("Amazon EC2", "10.00"),                      # duration shop: acme 3000, globex 6000, unattr 1000
    focus_row("Amazon RDS", "5.00"),                       # requests shop+batch: acme 30, globex 1010, unattr 10
    focus_row("Bedrock", "4.00"),                          # llm_tokens: acme 100, globex 400
    focus_row("Data Transfer", "3.00"),                    # bytes × weight: acme 250, globex 250 (bad value skipped)
    focus_row("DynamoDB", "1.00"),                         # capacity × weight: acme 3.5, globex 3.0
    focus_row("Amazon S3", "2.50", tags={"tenant": "initech"}),
    focus_row("Amazon S3", "0.07", tags={"tenant": "x'); drop table spans; --"}),
    focus_row("AWS Lambda", "0.33"),                       # no rule
]

EXPECTED = {  # by hand from the drivers in conftest
    0: {"acme": "3", "globex": "6", None: "1"},
    1: {"acme": Decimal(5) * 30 / 1050, "globex": Decimal(5) * 1010 / 1050, None: Decimal(5) * 10 / 1050},
    2: {"acme": "0.8", "globex": "3.2"},
    3: {"acme": "1.5", "globex": "1.5"},
    4: {"acme": Decimal(1) * Decimal("3.5") / Decimal("6.5"), "globex": Decimal(1) * 3 / Decimal("6.5")},
    5: {"initech": "2.5"},
    6: {None: "0.07"},
    7: {None: "0.33"},
}


def rows(wh, sql, params=None):
    con = wh.connect()
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def check_conservation(wh):
    bad = rows(wh, """
        select l.line_id, l.amount, coalesce(sum(a.amount), 0) from stg_cost_lines l
        left join stg_cost_allocations a using (line_id) group by all having l.amount <> coalesce(sum(a.amount), 0)""")
    assert bad == []
    (n_lines,) = rows(wh, "select count(*) from stg_cost_lines")[0]
    return n_lines


def test_focus_ingest_allocates_every_line_as_computed_by_hand(tmp_path, warehouse):
    f = write_focus_csv(tmp_path / "focus.csv", FOCUS)
    report = ingest(warehouse, [str(f)], make_cfg(RULES))
    assert len(report.ingested) == 1 and report.ingested[0]["lines"] == len(FOCUS)
    got = rows(warehouse, "select cast(split_part(line_id, ':', 2) as int), tenant_id, amount from stg_cost_allocations")
    by_line: dict[int, dict] = {}
    for i, t, a in got:
        by_line.setdefault(i, {})[t] = by_line.get(i, {}).get(t, Decimal(0)) + a
    for i, want in EXPECTED.items():
        assert set(by_line[i]) == set(want), i
        for t, v in want.items():
            assert abs(by_line[i][t] - Decimal(v)) <= Decimal("1e-9"), (i, t)  # the nano split rounding
    assert check_conservation(warehouse) == len(FOCUS)


def test_views_report_method_driver_reason_and_add_up(tmp_path, warehouse):
    f = write_focus_csv(tmp_path / "focus.csv", FOCUS)
    ingest(warehouse, [str(f)], make_cfg(RULES))
    daily = rows(warehouse, "select tenant_id, method, driver, cost, driver_quantity from tenant_cost_daily "
                            "where service = 'Amazon EC2' order by tenant_id")
    assert daily == [("acme", "proportional", "duration@shop", Decimal("3"), Decimal("3000")),
                     ("globex", "proportional", "duration@shop", Decimal("6"), Decimal("6000"))]
    un = dict(((r[0], r[1]), r[2]) for r in rows(warehouse, "select service, reason, cost from unallocated_cost"))
    assert un[("Amazon S3", "invalid_tenant_tag")] == Decimal("0.07")
    assert un[("AWS Lambda", "no_matching_rule")] == Decimal("0.33")
    assert un[("Amazon EC2", "unattributed_usage")] == Decimal("1")
    total_in = rows(warehouse, "select sum(amount) from stg_cost_lines")[0][0]
    total_out = rows(warehouse, "select (select sum(cost) from tenant_cost_daily) + (select sum(cost) from unallocated_cost)")[0][0]
    assert total_in == total_out == sum(Decimal(r["EffectiveCost"]) for r in FOCUS)


def test_reingesting_the_same_file_is_a_no_op_and_a_restated_file_supersedes(tmp_path, warehouse):
    f = write_focus_csv(tmp_path / "focus.csv", FOCUS)
    cfg = make_cfg(RULES)
    ingest(warehouse, [str(f)], cfg)
    runs = len(warehouse.committed_runs())
    again = ingest(warehouse, [str(f)], cfg)
    assert again.ingested == [] and again.skipped == [str(f.resolve())]
    assert len(warehouse.committed_runs()) == runs
    write_focus_csv(f, FOCUS[:2])  # the provider restated the export at the same path
    ingest(warehouse, [str(f)], cfg)
    assert rows(warehouse, "select sum(amount) from stg_cost_lines")[0][0] == Decimal("15")
    assert check_conservation(warehouse) == 2


def test_cur2_file_through_the_warehouse(tmp_path, warehouse):
    f = write_cur(tmp_path / "cur.parquet", [
        cur_row(1, "AmazonEC2", 1.00, resource="i-1"),
        cur_row(2, "AmazonECS", 0.0, resource="task-a", parent="i-1", split=0.60, unused=0.15, tags={"user_tenant": "acme"}),
        cur_row(3, "AmazonECS", 0.0, resource="task-b", parent="i-1", split=0.20, unused=0.05, tags={"user_tenant": "globex"}),
        cur_row(4, "AmazonEC2", 0.90),
    ])
    rules = {"rules": [{"name": "idle", "match": {"categories": ["idle"]}, "method": "shared"}] + RULES["rules"]}
    ingest(warehouse, [str(f)], make_cfg(rules))
    per_tenant = dict(rows(warehouse, "select tenant_id, sum(cost) from tenant_cost_daily group by 1"))
    # direct 0.60/0.20; EC2 0.90 by duration 3000:6000:1000 → 0.27/0.54 (+0.09 unattributed);
    # idle 0.20 spread by allocated cost (0.87 : 0.74)
    idle_acme = Decimal("0.2") * Decimal("0.87") / Decimal("1.61")
    assert abs(per_tenant["acme"] - (Decimal("0.87") + idle_acme)) <= Decimal("1e-9")
    assert per_tenant["acme"] + per_tenant["globex"] == Decimal("1.81")
    assert check_conservation(warehouse) == 6


def test_margin_uses_invoice_lines_and_works_with_no_revenue(tmp_path, warehouse):
    f = write_focus_csv(tmp_path / "focus.csv", FOCUS)
    ingest(warehouse, [str(f)], make_cfg(RULES))
    no_rev = rows(warehouse, "select tenant_id, revenue, gross_margin from tenant_margin_monthly where tenant_id = 'initech'")
    assert no_rev == [("initech", Decimal("0"), Decimal("-2.5"))]
    inv = {f.name: None for f in schemas.INVOICE_LINES}
    fill = {pa.string(): "x", schemas.TS: ts(0), schemas.QUANTITY: Decimal(0), pa.bool_(): False}
    row = {k: fill.get(schemas.INVOICE_LINES.field(k).type) for k in inv}
    row.update({"tenant_id": "initech", "period": "2026-11", "currency": "usd", "amount": Decimal("10.00"), "line_id": "l1"})
    warehouse.write_part("invoice_lines", "bill-1", "p0", pa.Table.from_pylist([row], schema=schemas.INVOICE_LINES))
    warehouse.commit("bill-1", [])
    got = rows(warehouse, "select revenue, cost, gross_margin, margin_pct from tenant_margin_monthly "
                          "where tenant_id = 'initech' and period_start = date '2026-11-01'")
    assert got == [(Decimal("10"), Decimal("2.5"), Decimal("7.5"), 75.0)]


def test_reallocate_after_telemetry_changes_and_is_idempotent(tmp_path, warehouse):
    f = write_focus_csv(tmp_path / "focus.csv", [focus_row("Amazon RDS", "4.00")])
    cfg = make_cfg(RULES)
    ingest(warehouse, [str(f)], cfg)
    assert reallocate(warehouse, cfg).ingested == []  # same rules, same drivers: nothing new
    new_cfg = make_cfg({"rules": [{"name": "all", "method": "even", "tenants": ["acme", "globex"]}]})
    assert len(reallocate(warehouse, new_cfg).ingested) == 1
    assert rows(warehouse, "select tenant_id, cost, method from tenant_cost_daily order by 1") == [
        ("acme", Decimal("2"), "even"), ("globex", Decimal("2"), "even")]
    check_conservation(warehouse)


def test_a_bad_file_writes_nothing(tmp_path, warehouse):
    f = tmp_path / "cost.csv"
    f.write_text("day,service,amount\n2026-11-03,api,1\n2026-11-03,api,oops\n")
    before = len(warehouse.committed_runs())
    with pytest.raises(CostInputError, match="row 2"):
        ingest(warehouse, [str(f)], make_cfg(RULES))
    assert len(warehouse.committed_runs()) == before


def test_cli_ingest_and_report_flag_negative_margin(tmp_path, warehouse):
    cfg_path = tmp_path / "tenantry.yaml"
    import yaml
    cfg_path.write_text(yaml.safe_dump({"tenants": {"acme": {}, "globex": {}, "initech": {}}, "cost": RULES}))
    f = write_focus_csv(tmp_path / "focus.csv", FOCUS)
    runner = CliRunner()
    r = runner.invoke(cost_cli, ["ingest", "--warehouse", str(warehouse.root), "--config", str(cfg_path), str(f)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cost_cli, ["report", "--warehouse", str(warehouse.root), "--period", "2026-11"])
    assert r.exit_code == 0, r.output
    assert "top tenants by cost" in r.output and "least profitable" in r.output
    assert "negative margin" in r.output and "globex" in r.output
    bad = runner.invoke(cost_cli, ["report", "--warehouse", str(warehouse.root), "--period", "2026-13"])
    assert bad.exit_code != 0 and "YYYY-MM" in bad.output
    for cmd in ("ingest", "allocate", "report"):
        assert runner.invoke(cost_cli, [cmd, "--help"]).exit_code == 0


def test_demo_cost_file_adds_up(tmp_path, warehouse):
    from tenantry.cost import demo
    import yaml

    p = demo.write_demo_cost(tmp_path / "demo.csv", DAY)
    cfg = make_cfg(yaml.safe_load(demo.DEMO_COST_YAML)["cost"], tenants={})
    ingest(warehouse, [str(p)], cfg)
    assert rows(warehouse, "select sum(amount) from stg_cost_lines")[0][0] == demo.demo_total(DAY)
    check_conservation(warehouse)
    assert rows(warehouse, "select reason from unallocated_cost where service = 'Amazon Simple Storage Service'") == [
        ("invalid_tenant_tag",)]
    assert demo.write_demo_cost(tmp_path / "again.csv", DAY.isoformat()).read_bytes() == p.read_bytes()
