"""Usage events inside OTLP logs: extracted exactly, or quarantined with the right reason."""

from __future__ import annotations

import decimal
import json

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from test_otlp_builders import T0, log_request, usage_record

from tenantry import schemas
from tenantry.otlp import decode_request
from tenantry.otlp.usage import QuantityError, parse_quantity


def decode_logs(records, resource=None):
    return decode_request("logs", log_request(records, resource).SerializeToString(), "b-9")


def events(out) -> list[dict]:
    t = out["usage_events"]
    return t.drop_columns(["time"]).to_pylist()


def test_usage_event_goes_to_usage_events_instead_of_logs():
    out = decode_logs([
        usage_record("ev-1", "api.calls", "3", unit="1", dims={"region": "eu", "plan": "pro"},
                     trace_id=b"\x01" * 16, span_id=b"\x02" * 8),
        {"body": "ordinary log"},
    ])
    assert out["logs"].num_rows == 1 and out["logs"].column("body")[0].as_py() == "ordinary log"
    (ev,) = events(out)
    assert ev == {
        "event_id": "ev-1", "tenant_id": "acme", "meter": "api.calls", "quantity": decimal.Decimal("3.000000000"),
        "unit": "1", "dimensions": [("region", "eu"), ("plan", "pro")], "source": "app",
        "service_name": "billing", "trace_id": "01" * 16, "span_id": "02" * 8, "ingest_batch": "b-9",
    }
    assert out["usage_events"].column("time")[0].value == T0


def test_event_name_attribute_also_marks_a_usage_event():
    rec = usage_record("ev-2")
    del rec["event_name"]
    rec["attrs"]["event.name"] = "tenantry.usage"
    out = decode_logs([rec])
    assert out["logs"].num_rows == 0 and out["usage_events"].num_rows == 1


def test_point_one_plus_point_two_sums_to_exactly_point_three():
    out = decode_logs([usage_record("a", quantity="0.1"), usage_record("b", quantity=0.2)])
    total = pc.sum(out["usage_events"].column("quantity")).as_py()
    assert total == decimal.Decimal("0.3")
    assert out["usage_events"].schema.field("quantity").type == schemas.QUANTITY


@pytest.mark.parametrize("quantity,expected", [
    ("42", "42"), (7, "7"), (2.5, "2.5"), ("0.000000001", "0.000000001"), ("1e3", "1000"),
    ("99999999999999999999999999999.999999999", "99999999999999999999999999999.999999999"), ("-0", "0"),
])
def test_quantities_convert_exactly(quantity, expected):
    (ev,) = events(decode_logs([usage_record(quantity=quantity)]))
    assert ev["quantity"] == decimal.Decimal(expected)


@pytest.mark.parametrize("quantity,why", [
    ("-1", "negative"), (-0.5, "negative"), ("NaN", "not a decimal"), (float("inf"), "not a decimal"),
    ("abc", "not a decimal"), ("1_000", "not a decimal"), ("0.0000000001", "decimal places"),
    ("1e40", "out of range"), ("1" * 300, "too many characters"), (True, "not a decimal"),
    ("1; DROP TABLE usage", "not a decimal"), ([1, 2], "not a decimal"),
])
def test_bad_quantities_are_quarantined_as_invalid_quantity(quantity, why):
    out = decode_logs([usage_record("ev-x", quantity=quantity), usage_record("ev-ok")])
    assert out["usage_events"].column("event_id").to_pylist() == ["ev-ok"]
    (q,) = out["quarantine"].drop_columns(["time"]).to_pylist()
    assert q["reason"] == "invalid_quantity" and q["table"] == "usage_events" and why in q["detail"]
    assert json.loads(q["raw"])["event_name"] == "tenantry.usage"
    assert out["logs"].num_rows == 0


@pytest.mark.parametrize("missing", ["event_id", "meter", "quantity"])
def test_missing_required_usage_fields_are_quarantined_as_missing_field(missing):
    out = decode_logs([usage_record(**{missing: None})])
    (q,) = out["quarantine"].drop_columns(["time"]).to_pylist()
    assert q["reason"] == "missing_field" and f"tenantry.usage.{missing}" in q["detail"]
    assert out["usage_events"].num_rows == 0 and out["logs"].num_rows == 0


def test_usage_time_falls_back_to_observed_time_and_both_zero_is_missing():
    out = decode_logs([usage_record("a", time=0, observed=T0 + 7), usage_record("b", time=0, observed=0)])
    assert out["usage_events"].column("time")[0].value == T0 + 7
    (q,) = out["quarantine"].drop_columns(["time"]).to_pylist()
    assert q["reason"] == "missing_field" and "time" in q["detail"]


def test_usage_tenant_falls_back_to_the_resource():
    rec = usage_record("a", tenant=None)
    del rec["attrs"]["tenant.id"]
    out = decode_logs([rec], resource={"tenant.id": "from-resource"})
    assert out["usage_events"].column("tenant_id").to_pylist() == ["from-resource"]


def test_every_log_record_lands_in_exactly_one_table():
    records = [usage_record(f"e{i}", quantity=q) for i, q in enumerate(["1", "-1", None, "2.5"])]
    records += [{"body": "x"}] * 5
    out = decode_logs(records)
    assert out["logs"].num_rows + out["usage_events"].num_rows + out["quarantine"].num_rows == 9
    assert out["usage_events"].num_rows == 2 and out["quarantine"].num_rows == 2


def test_parse_quantity_refuses_rounding():
    assert parse_quantity("1.5") == decimal.Decimal("1.5")
    with pytest.raises(QuantityError, match="decimal places"):
        parse_quantity("1.1234567891")
    assert pa.array([parse_quantity(" 12.5 ")], schemas.QUANTITY)[0].as_py() == decimal.Decimal("12.5")


QUANTITY_TEXTS = ["1", "0", "0.5", "007", "1.123456789", "1.1234567891", "99999999999999999999999999999",
                  "100000000000000000000000000000", " 2 ", "+3", "-1", "-0", "1e3", "1.", ".5", "nan", "abc", "",
                  "0.000000001", "12345678901234567890123456789.123456789", "١٢٣"]


@pytest.mark.parametrize("seed", range(4))
def test_a_mixed_batch_matches_parse_quantity_row_by_row(seed):
    """The vectorized extraction (plain quantities cast in one go, the rest parsed per row) gives
    each row what parse_quantity gives it, keeps dimensions in order and quarantines the rest."""
    import random

    rnd = random.Random(seed)
    records, expect = [], {}
    for i in range(200):
        q = rnd.choice(QUANTITY_TEXTS)
        dims = {f"d{k}": f"v{i}-{k}" for k in range(rnd.randrange(3))}
        rec = usage_record(f"ev-{i}", "api.calls", q, dims=dims)
        rec["attrs"]["other"] = "x"
        records.append(rec)
        try:
            expect[f"ev-{i}"] = (parse_quantity(q), sorted(dims.items()))
        except QuantityError:
            expect[f"ev-{i}"] = None
    out = decode_logs(records)
    got = {e["event_id"]: (e["quantity"], sorted(e["dimensions"])) for e in events(out)}
    assert got == {k: v for k, v in expect.items() if v is not None}
    q = out["quarantine"]
    assert q.num_rows == sum(v is None for v in expect.values())
    assert set(q.column("reason").to_pylist()) <= {str(schemas.Reason.INVALID_QUANTITY), str(schemas.Reason.MISSING_FIELD)}
