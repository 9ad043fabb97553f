"""The bill / export / reconcile commands, the file exporter and the demo hook, end to end."""

from __future__ import annotations

import csv
import json

import pytest
import yaml
from click.testing import CliRunner

from tenantry.billing import demo
from tenantry.billing.cli import COMMANDS, bill, export, reconcile
from tenantry.config import parse

CONFIG = {
    "plans": {"pro": {"currency": "usd", "meters": {"api_calls": {"model": "per_unit", "unit_price": "0.01", "included": 10}}}},
    "tenants": {"acme": {"plan": "pro", "billing": {"stripe_customer_id": "cus_acme"}}, "hooli": {"plan": "pro"}},
    "exports": {"file": {"dir": "exports/ledger", "format": "csv"}},
}


@pytest.fixture
def setup(wh, write_ledger, tmp_path):
    write_ledger([{"tenant": "acme", "meter": "api_calls", "start": "2026-11-02", "quantity": "110"},
                  {"tenant": "hooli", "meter": "api_calls", "start": "2026-11-02", "quantity": "60"},
                  {"tenant": "stranger", "meter": "api_calls", "start": "2026-11-02", "quantity": "5"}])
    p = tmp_path / "tenantry.yaml"
    p.write_text(yaml.safe_dump(CONFIG))
    return str(wh.root), str(p)


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_command_has_help(cmd):
    r = CliRunner().invoke(cmd, ["--help"])
    assert r.exit_code == 0 and "--warehouse" in r.output


def test_bill_then_export_to_file_then_reconcile(setup):
    wh, cfg = setup
    r = CliRunner().invoke(bill, ["--warehouse", wh, "--period", "2026-11", "--config", cfg])
    assert r.exit_code == 0, r.output
    assert "1.00" in r.output and "0.50" in r.output
    r = CliRunner().invoke(export, ["--to", "file", "--warehouse", wh, "--period", "2026-11", "--config", cfg])
    assert r.exit_code == 0, r.output
    (f,) = list((__import__("pathlib").Path(wh) / "exports" / "ledger").glob("*.csv"))
    rows = list(csv.DictReader(open(f)))
    assert sorted(r["tenant_id"] for r in rows) == ["acme", "hooli"]  # not in the catalog: not exported
    r = CliRunner().invoke(export, ["--to", "file", "--warehouse", wh, "--config", cfg])
    assert len(list(f.parent.glob("*.csv"))) == 1  # nothing pending: no second file
    r = CliRunner().invoke(reconcile, ["--warehouse", wh, "--period", "2026-11", "--config", cfg])
    assert r.exit_code == 0, r.output
    for word in ("unexported", "no_billing_account", "no_plan", "stranger"):
        assert word in r.output


def test_dry_run_prints_payloads_and_records_nothing(setup):
    wh, cfg = setup
    r = CliRunner().invoke(export, ["--to", "file", "--warehouse", wh, "--config", cfg, "--dry-run"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.strip().splitlines()[-1])["tenant_id"] in ("acme", "hooli")
    r = CliRunner().invoke(export, ["--to", "file", "--warehouse", wh, "--config", cfg, "--dry-run"])
    assert r.output.count('"idempotency_key"') == 2


def test_config_errors_are_reported_not_raised(setup, tmp_path):
    wh, _ = setup
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"plans": {"pro": {"meters": {"x": {"model": "per_unit", "unit_price": 0.1}}}}}))
    r = CliRunner().invoke(bill, ["--warehouse", wh, "--period", "2026-11", "--config", str(bad)])
    assert r.exit_code == 1 and "plans.pro.meters.x" in r.output and "quoted decimals" in r.output
    r = CliRunner().invoke(export, ["--to", "stripe", "--warehouse", wh, "--config", str(bad)])
    assert r.exit_code != 0


def test_demo_run_rates_exports_and_finds_the_planted_leaks(setup):
    wh, cfg = setup
    summary = demo.run(wh, parse(yaml.safe_load(open(cfg))))
    assert summary["period"] == "2026-11"
    assert summary["invoice_totals"] == {"acme": "1.00 usd", "hooli": "0.50 usd"}
    assert summary["exported"]["file"]["acknowledged"] == 2
    assert summary["findings"] == {"unexported": 1, "no_plan": 1, "no_billing_account": 1}
    assert summary["at_risk"] == {"acme": "1.00 usd", "hooli": "0.50 usd"}
