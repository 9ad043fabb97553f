from datetime import timedelta
from decimal import Decimal

import pytest

from collector_processors.base import ProcessorConfigError
from collector_processors.validate import Validate

from conftest import HOSTILE, NOW, assert_accounted, make_batch, map_column


def _validate(**options):
    return Validate(options=options, clock=lambda: NOW)


def _reasons(res):
    return res.quarantined.column("reason").to_pylist()


def test_well_formed_rows_are_kept(table):
    res = _validate().process(table, make_batch(table, [{}, {"attrs": {"k": "v"}}]))
    assert res.kept.num_rows == 2 and res.quarantined.num_rows == 0


@pytest.mark.parametrize("delta", [timedelta(days=31), -timedelta(hours=2)])
def test_timestamp_outside_window_is_quarantined(table, delta):
    res = _validate().process(table, make_batch(table, [{"time": NOW - delta}, {}]))
    assert _reasons(res) == ["timestamp_out_of_range"]
    assert_accounted(res, 2)


def test_window_can_be_turned_off(table):
    res = _validate(max_past=None, max_future=None).process(table, make_batch(table, [{"time": NOW - timedelta(days=3650)}]))
    assert res.kept.num_rows == 1


def test_end_before_start_is_quarantined():
    res = _validate().process("spans", make_batch("spans", [{"end_time": NOW - timedelta(seconds=1), "start_time": NOW}]))
    assert _reasons(res) == ["end_before_start"]


def test_too_many_attributes(table):
    attrs = {f"k{i}": "v" for i in range(5)}
    res = _validate(max_attributes=4).process(table, make_batch(table, [{"attrs": attrs}, {"attrs": {"a": "b"}}]))
    assert _reasons(res) == ["too_many_attributes"]


@pytest.mark.parametrize("where", ["value", "key"])
def test_value_too_long_in_maps(table, where):
    long = "é" * 5000  # 5000 characters, 10000 bytes: limits are in characters
    attrs = {"k": long} if where == "value" else {long: "v"}
    res = _validate().process(table, make_batch(table, [{"attrs": attrs}]))
    assert _reasons(res) == ["value_too_long"]
    ok = _validate(max_value_length=5000).process(table, make_batch(table, [{"attrs": attrs}]))
    assert ok.kept.num_rows == 1


def test_hostile_strings_within_limits_pass_validate(table):
    rows = [{"attrs": {"h": h}} for h in HOSTILE if len(h) < 4096]
    assert _validate().process(table, make_batch(table, rows)).kept.num_rows == len(rows)


def test_ten_thousand_char_text_column_is_too_long(table):
    col = {"spans": "name", "logs": "severity_text", "usage_events": "unit"}[table]
    res = _validate().process(table, make_batch(table, [{col: "x" * 10_000}]))
    assert _reasons(res) == ["value_too_long"]


def test_log_body_has_its_own_limit():
    res = _validate(max_body_length=100).process("logs", make_batch("logs", [{"body": "x" * 101}, {"body": "x" * 5000}]))
    assert _reasons(res) == ["value_too_long", "value_too_long"]
    assert _validate().process("logs", make_batch("logs", [{"body": "x" * 10_000}])).kept.num_rows == 1


def test_missing_required_field(table):
    col = {"spans": "trace_id", "logs": "trace_id", "usage_events": "meter"}[table]
    opts = {"required": {"logs": ["trace_id"]}} if table == "logs" else {}
    res = _validate(**opts).process(table, make_batch(table, [{col: ""}, {col: "present"}]))
    assert _reasons(res) == ["missing_field"]


def test_negative_usage_quantity_is_invalid():
    rows = [{"quantity": Decimal("-1")}, {"quantity": Decimal("0")}, {"quantity": Decimal("2.5")}]
    res = _validate().process("usage_events", make_batch("usage_events", rows))
    assert _reasons(res) == ["invalid_quantity"]
    assert _validate(allow_negative_quantity=True).process("usage_events", make_batch("usage_events", rows)).kept.num_rows == 3


def test_first_failing_check_decides_the_reason(table):
    res = _validate(max_attributes=0).process(table, make_batch(table, [{"time": NOW - timedelta(days=60), "attrs": {"a": "b"}}]))
    assert _reasons(res) == ["timestamp_out_of_range"]


def test_quarantine_rows_keep_the_raw_record(table):
    res = _validate().process(table, make_batch(table, [{"tenant": "acme", "time": NOW - timedelta(days=60), "attrs": {"k": "<script>"}}]))
    row = res.quarantined.to_pylist()[0]
    assert row["processor"] == "validate" and row["tenant_id"] == "acme" and row["table"] == table
    assert "<script>" in row["raw"] and row["detail"]


def test_counts_per_tenant_and_reason(table):
    rows = [{"tenant": "acme"}, {"tenant": "acme", "time": NOW - timedelta(days=60)}, {"tenant": "globex"}]
    res = _validate().process(table, make_batch(table, rows))
    assert res.stats[("acme", "validate", "kept")] == 1
    assert res.stats[("acme", "validate", "quarantined:timestamp_out_of_range")] == 1
    assert res.stats[("globex", "validate", "kept")] == 1


def test_empty_batch_and_null_maps(table):
    assert _validate().process(table, make_batch(table, [])).kept.num_rows == 0
    assert _validate().process(table, make_batch(table, [{"attrs": None}])).kept.num_rows == 1


def test_sliced_batches_are_checked_row_by_row(table):
    batch = make_batch(table, [{"attrs": {"k": "x" * 5000}}, {}, {"attrs": {"k": "x" * 5000}}])
    res = _validate().process(table, batch.slice(1))
    assert _reasons(res) == ["value_too_long"] and res.kept.num_rows == 1
    assert res.kept.column(map_column(table)).to_pylist() == [[]]


@pytest.mark.parametrize("options,message", [
    ({"max_past": "soon"}, "max_past: expected a duration"),
    ({"max_attributes": -1}, "max_attributes"),
    ({"required": {"spans": ["nope"]}}, "required: spans: unknown column 'nope'"),
    ({"required": {"traces": []}}, "required: traces: unknown table"),
    ({"max_len": 3}, "max_len: unknown option"),
])
def test_bad_config_names_the_key(options, message):
    with pytest.raises(ProcessorConfigError, match=message):
        Validate(options=options)
