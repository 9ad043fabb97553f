"""The ledger views (usage_ledger, ledger_balance, ledger_evidence) and `tenantry ledger show`."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from tenantry import querying
from tenantry.config import parse
from tenantry.ledger import update_for_run
from tenantry.ledger.cli import ledger
from tenantry.ledger.show import PeriodError, parse_period
from tenantry.ledger.testing import UsageEvent as E
from tenantry.ledger.testing import ledger_run, usage_table
from tenantry.warehouse import Warehouse

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 10, 12, tzinfo=UTC)
CFG = parse({"meters": [{"name": "calls", "group_by": ["region"]}]})


@pytest.fixture(scope="module")
def wh(tmp_path_factory):
    w = Warehouse.open(tmp_path_factory.mktemp("views") / "wh")
    ledger_run(w, "r1", [E("e1", "acme", "calls", "1", T0, (("region", "eu"),), trace_id="t" * 32, span_id="s" * 16),
                         E("e2", "globex", "calls", "2", T0)], CFG, T0)
    ledger_run(w, "r2", [E("e3", "acme", "calls", "0.5", T0, (("region", "eu"),)),
                         E("e1", "acme", "calls", "1", T0)], CFG, T0 + dt.timedelta(days=5), build_views=True)
    return w


def test_ledger_balance_sums_revisions_and_adjustments(wh):
    r = querying.run(str(wh.root), "select tenant_id, quantity, event_count, revisions, adjustments, dimensions "
                                   "from ledger_balance order by tenant_id")
    assert r.rows == [("acme", Decimal("1.5"), 2, 2, 1, {"region": "eu"}), ("globex", Decimal(2), 1, 1, 0, {})]


def test_usage_ledger_lists_every_entry_with_unique_ids(wh):
    r = querying.run(str(wh.root), "select count(*), count(distinct entry_id) from usage_ledger")
    assert r.rows == [(3, 3)]


def test_ledger_evidence_names_the_events_and_spans_behind_each_entry(wh):
    r = querying.run(str(wh.root), "select event_id, revision, kind, trace_id from ledger_evidence "
                                   "where tenant_id = 'acme' order by event_id")
    assert r.rows == [("e1", 1, "usage", "t" * 32), ("e3", 2, "adjustment", None)]


def test_every_counted_event_is_evidence_of_exactly_one_entry(wh):
    r = querying.run(str(wh.root), "select (select count(*) from stg_usage_dedup), (select count(*) from ledger_evidence), "
                                   "(select sum(event_count) from usage_ledger)")
    assert r.rows == [(3, 3, 3)]
    per_entry = querying.run(str(wh.root), "select e.entry_id, e.event_count, count(v.event_id) from usage_ledger e "
                                           "left join ledger_evidence v using (entry_id) group by all")
    assert all(n == m for _, n, m in per_entry.rows)


def test_a_credit_entry_of_the_same_key_and_run_is_not_an_events_entry(tmp_path):
    w = Warehouse.open(tmp_path / "wh")
    w.write_part("usage_events", "r1", "usage-0", usage_table([E("e1", "acme", "calls", "1", T0)], ingest_batch="in-r1"))
    update_for_run(w, "r1", CFG, T0)
    entry = pq.read_table(next((w.lake / "usage_ledger" / "run=r1").glob("*.parquet")))
    credit = entry.set_column(entry.schema.get_field_index("kind"), "kind", pa.array(["credit"]))
    credit = credit.set_column(0, "entry_id", pa.array(["c" * 32]))
    w.write_part("usage_ledger", "r1", "sla-credits", credit)
    w.commit("r1", ["in-r1"])
    w.build_views()
    r = querying.run(str(w.root), "select event_id, entry_id, kind from ledger_evidence")
    assert r.rows == [("e1", entry.column("entry_id")[0].as_py(), "usage")]


def test_tenant_scope_sees_only_its_own_ledger(wh):
    r = querying.run(str(wh.root), "select distinct tenant_id from ledger_evidence union "
                                   "select distinct tenant_id from ledger_balance", tenant="globex")
    assert r.rows == [("globex",)]


def test_cli_show_filters_by_tenant_and_period(wh):
    out = CliRunner().invoke(ledger, ["show", "--warehouse", str(wh.root), "--tenant", "acme",
                                      "--period", "2026-03", "--format", "json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.output)
    assert [(r["tenant_id"], r["quantity"]) for r in rows] == [("acme", "1.500000000")]
    empty = CliRunner().invoke(ledger, ["show", "--warehouse", str(wh.root), "--period", "2026-04", "--format", "json"])
    assert json.loads(empty.output) == []


@pytest.mark.parametrize("args, message", [
    (["--period", "2026-13"], "month must be in 1..12"),
    (["--period", "2026'; drop"], "use YYYY"),
    (["--tenant", "x' or 1=1 --"], "is not valid"),
])
def test_cli_show_rejects_bad_input_with_a_message(wh, args, message):
    out = CliRunner().invoke(ledger, ["show", "--warehouse", str(wh.root), *args])
    assert out.exit_code == 1 and message in out.output


def test_cli_show_without_a_warehouse_says_what_to_do(tmp_path):
    out = CliRunner().invoke(ledger, ["show", "--warehouse", str(tmp_path / "none")])
    assert out.exit_code == 1 and "run batch" in out.output


@pytest.mark.parametrize("text, start, end", [
    ("2026", dt.datetime(2026, 1, 1, tzinfo=UTC), dt.datetime(2027, 1, 1, tzinfo=UTC)),
    ("2026-12", dt.datetime(2026, 12, 1, tzinfo=UTC), dt.datetime(2027, 1, 1, tzinfo=UTC)),
    ("2026-02-28", dt.datetime(2026, 2, 28, tzinfo=UTC), dt.datetime(2026, 3, 1, tzinfo=UTC)),
    ("2026-02-28T23", dt.datetime(2026, 2, 28, 23, tzinfo=UTC), dt.datetime(2026, 3, 1, tzinfo=UTC)),
])
def test_parse_period(text, start, end):
    assert parse_period(text) == (start, end)


def test_parse_period_rejects_garbage():
    with pytest.raises(PeriodError):
        parse_period("")
