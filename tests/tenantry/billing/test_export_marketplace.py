"""AWS Marketplace BatchMeterUsage: moto in-process with the customer registered, and botocore's
Stubber (which validates every call against the real service model) where moto cannot answer."""

from __future__ import annotations

import datetime as dt

import boto3
import pytest
from botocore.stub import ANY, Stubber
from conftest import make_config
from moto import mock_aws

from tenantry.billing import exporters
from tenantry.billing.outbox import run_export

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 11, 20, 12, tzinfo=UTC)
PRODUCT = "prod-tenantry"


def hour(h: int, day: int = 20) -> dt.datetime:
    return dt.datetime(2026, 11, day, h, tzinfo=UTC)


def rows(n: int, tenant="acme", meter="api_calls", qty="10", start_hour=0, **kw):
    return [{"tenant": tenant, "meter": meter, "start": hour(start_hour + i % 10), "end": hour(start_hour + i % 10 + 1),
             "quantity": qty, "entry_id": f"{tenant}-{meter}-{i}", **kw} for i in range(n)]


def cfg_for(**mp):
    return make_config({
        "tenants": {"acme": {"billing": {"aws_customer_identifier": "cust-acme"}},
                    "gone": {"billing": {"aws_customer_identifier": "cust-gone"}},
                    "newco": {"billing": {"aws_customer_account_id": "111122223333",
                                          "aws_license_arn": "arn:aws:license-manager::111122223333:license/l-abc"}}},
        "exports": {"retry": {"base_delay_s": 0, "max_attempts": 3},
                    "marketplace": {"product_code": PRODUCT, "region": "us-east-1", **mp}}})


@pytest.fixture
def aws(monkeypatch):
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    with mock_aws():
        from moto.meteringmarketplace.models import meteringmarketplace_backends

        meteringmarketplace_backends["123456789012"]["us-east-1"].customers_by_product[PRODUCT].append("cust-acme")
        yield boto3.client("meteringmarketplace", region_name="us-east-1")


def run(wh, cfg, client=None):
    exp = exporters.load("marketplace", cfg.exports, client=client)
    return run_export(wh.root, cfg, exp, now=lambda: NOW, sleep=lambda s: None), exp


class Spy:
    """The real (moto) client, recording calls; optionally answering some records as unprocessed."""

    def __init__(self, client, unprocessed_first: int = 0):
        self.client, self.calls, self.unprocessed_first = client, [], unprocessed_first

    def batch_meter_usage(self, **kw):
        self.calls.append(kw)
        if self.unprocessed_first and len(self.calls) == 1:
            held = kw["UsageRecords"][: self.unprocessed_first]
            resp = self.client.batch_meter_usage(**{**kw, "UsageRecords": kw["UsageRecords"][self.unprocessed_first:]})
            resp["UnprocessedRecords"] = held
            return resp
        return self.client.batch_meter_usage(**kw)


def test_records_go_in_calls_of_at_most_25_and_are_acknowledged(wh, write_ledger, aws):
    write_ledger(rows(30))
    spy = Spy(aws)
    rep, _ = run(wh, cfg_for(), spy)
    assert [len(c["UsageRecords"]) for c in spy.calls] == [25, 5]
    assert rep.per_tenant["acme"]["acknowledged"] == 30
    rec = spy.calls[0]["UsageRecords"][0]
    assert set(rec) == {"Timestamp", "CustomerIdentifier", "Dimension", "Quantity"}
    assert rec["CustomerIdentifier"] == "cust-acme" and rec["Quantity"] == 10 and spy.calls[0]["ProductCode"] == PRODUCT


def test_unsubscribed_customers_are_rejected(wh, write_ledger, aws):
    write_ledger(rows(2, tenant="gone"))
    rep, _ = run(wh, cfg_for(), aws)
    assert rep.per_tenant["gone"]["rejected"] == 2
    assert all("CustomerNotSubscribed" in why for _, _, why in rep.problems)


def test_unprocessed_records_are_retried_until_processed(wh, write_ledger, aws):
    write_ledger(rows(5))
    spy = Spy(aws, unprocessed_first=2)
    rep, _ = run(wh, cfg_for(), spy)
    assert rep.count("acknowledged") == 5 and [len(c["UsageRecords"]) for c in spy.calls] == [5, 2]


def test_rerun_pushes_nothing_twice(wh, write_ledger, aws):
    write_ledger(rows(3))
    spy = Spy(aws)
    run(wh, cfg_for(), spy)
    rep, _ = run(wh, cfg_for(), spy)
    assert len(spy.calls) == 1 and rep.per_tenant == {}


def test_each_entry_gets_its_own_second_within_its_hour(wh, write_ledger, aws):
    write_ledger(rows(10))
    spy = Spy(aws)
    run(wh, cfg_for(), spy)
    stamps = [r["Timestamp"] for c in spy.calls for r in c["UsageRecords"]]
    assert len(set(stamps)) == len(stamps)


def test_aws_account_id_and_license_arn_records_match_the_service_model(wh, write_ledger):
    write_ledger(rows(2, tenant="newco", meter="storage_gb", qty="1.5", dims={"region": "eu-west-1"}))
    client = boto3.client("meteringmarketplace", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    cfg = cfg_for(unit_scale={"storage_gb": "1000"}, dimensions={"storage_gb": "storage_mb"}, allocation_tags=["region"])
    with Stubber(client) as stub:
        stub.add_response("batch_meter_usage", {"Results": [], "UnprocessedRecords": []},
                          {"UsageRecords": [{"Timestamp": ANY, "CustomerAWSAccountId": "111122223333",
                                             "LicenseArn": "arn:aws:license-manager::111122223333:license/l-abc",
                                             "Dimension": "storage_mb", "Quantity": 1500,
                                             "UsageAllocations": [{"AllocatedUsageQuantity": 1500,
                                                                   "Tags": [{"Key": "region", "Value": "eu-west-1"}]}]}] * 2})
        stub.add_response("batch_meter_usage", {"Results": [], "UnprocessedRecords": []}, {"UsageRecords": ANY})
        stub.add_response("batch_meter_usage", {"Results": [], "UnprocessedRecords": []}, {"UsageRecords": ANY})
        rep, _ = run(wh, cfg, client)
    assert rep.count("failed") == 2  # no result came back for them: never assumed delivered


def test_a_batch_refused_for_one_record_is_retried_record_by_record(wh, write_ledger):
    write_ledger(rows(2))
    client = boto3.client("meteringmarketplace", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stub:
        stub.add_client_error("batch_meter_usage", "TimestampOutOfBoundsException", "out of range")
        stub.add_client_error("batch_meter_usage", "TimestampOutOfBoundsException", "out of range")
        stub.add_response("batch_meter_usage", {"Results": [{"UsageRecord": {
            "Timestamp": NOW, "CustomerIdentifier": "cust-acme", "Dimension": "api_calls", "Quantity": 10},
            "MeteringRecordId": "m-1", "Status": "Success"}], "UnprocessedRecords": []})
        exp = exporters.load("marketplace", cfg_for().exports, client=client)
        # make the second record's slot match the stubbed answer
        exp.report_time = lambda e: NOW if e.entry_id.endswith("-1") else NOW - dt.timedelta(minutes=5)
        rep = run_export(wh.root, cfg_for(), exp, now=lambda: NOW + dt.timedelta(minutes=1), sleep=lambda s: None)
    assert rep.count("stale") == 1 and rep.count("acknowledged") == 1


@pytest.mark.parametrize("qty, conf, status", [
    ("2.5", {}, "rejected"),                          # a fraction of the dimension's unit
    ("2.5", {"quantity": "decimal"}, "acknowledged"),
    ("-3", {}, "rejected"),
    ("3000000000", {}, "rejected"),                   # over the API's integer maximum
])
def test_quantities_outside_the_api_are_refused_locally(wh, write_ledger, aws, qty, conf, status):
    write_ledger(rows(1, qty=qty))
    client = Spy(aws)
    if conf.get("quantity") == "decimal":
        client = boto3.client("meteringmarketplace", region_name="us-east-1")
        stub = Stubber(client)
        stub.add_response("batch_meter_usage", {"Results": [], "UnprocessedRecords": []},
                          {"ProductCode": PRODUCT, "UsageRecords": [{"Timestamp": ANY, "CustomerIdentifier": "cust-acme",
                                                                     "Dimension": "api_calls", "QuantityAsDecimal": "2.5"}]})
        stub.activate()
        exp = exporters.load("marketplace", cfg_for(**conf).exports, client=client)
        sent = exp._call([exp.build(next(iter(_entries(wh))), "cid:cust-acme")])
        assert sent[0].status == "retry"  # the stub answered nothing for it; the call itself was valid
        return
    rep, _ = run(wh, cfg_for(**conf), client)
    assert rep.count(status) == 1


def _entries(wh):
    from tenantry.billing.outbox import pending_entries

    return pending_entries(wh, "marketplace", None)


def test_time_window_stale_warning_and_deferred(wh, write_ledger, aws):
    write_ledger([
        {"tenant": "acme", "meter": "m", "start": hour(5, 19), "end": hour(6, 19), "quantity": "1", "entry_id": "old"},
        {"tenant": "acme", "meter": "m", "start": hour(12, 19), "end": hour(13, 19), "quantity": "1", "entry_id": "edge"},
        {"tenant": "acme", "meter": "m", "start": hour(12), "end": hour(13), "quantity": "1", "entry_id": "open"},
    ])
    rep, _ = run(wh, cfg_for(), aws)
    c = rep.per_tenant["acme"]
    assert (c["stale"], c["acknowledged"], c["deferred"]) == (1, 1, 1)
    assert any("Marketplace will refuse this entry" in w for w in rep.warnings)
