"""EventBridge against moto in server mode on 127.0.0.1: an SBT-style rule routes the events to
an SQS queue, and the events are read back from it."""

from __future__ import annotations

import datetime as dt
import json

import boto3
import pytest
from conftest import make_config
from moto.server import ThreadedMotoServer

from tenantry.billing import exporters
from tenantry.billing.outbox import run_export

NOW = dt.datetime(2026, 11, 20, 12, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module")
def moto_url():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bus(moto_url, monkeypatch, request):
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    name = f"sbt-{request.node.name[:40].replace('[', '-').replace(']', '')}"
    ev = boto3.client("events", endpoint_url=moto_url)
    sqs = boto3.client("sqs", endpoint_url=moto_url)
    ev.create_event_bus(Name=name)
    q = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=q, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    # the rule SBT's EventManager creates for the ingestUsage listeners
    ev.put_rule(Name="ingestUsageRule", EventBusName=name, EventPattern=json.dumps(
        {"source": ["applicationPlaneEventSource"], "detail-type": ["ingestUsage"]}))
    ev.put_targets(Rule="ingestUsageRule", EventBusName=name, Targets=[{"Id": "q", "Arn": arn}])
    return name, q, sqs, moto_url


def drain(sqs, q) -> list[dict]:
    out = []
    while True:
        msgs = sqs.receive_message(QueueUrl=q, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not msgs:
            return out
        for m in msgs:
            out.append(json.loads(m["Body"]))
            sqs.delete_message(QueueUrl=q, ReceiptHandle=m["ReceiptHandle"])


def cfg_for(bus_name, url):
    return make_config({"tenants": {"acme": {}}, "exports": {
        "retry": {"base_delay_s": 0, "max_attempts": 3},
        "eventbridge": {"event_bus_name": bus_name, "endpoint_url": url, "region": "us-east-1",
                        "meters": {"api_calls": "ApiCalls"}}}})


def run(wh, cfg, client=None):
    return run_export(wh.root, cfg, exporters.load("eventbridge", cfg.exports, client=client), now=lambda: NOW,
                      sleep=lambda s: None)


def test_one_sbt_shaped_event_per_ledger_entry_reaches_the_listener(wh, write_ledger, bus):
    name, q, sqs, url = bus
    write_ledger([{"tenant": "acme", "meter": "api_calls", "start": f"2026-11-{d:02d}", "quantity": str(d * 100),
                   "dims": {"region": "eu"}} for d in range(1, 13)])
    rep = run(wh, cfg_for(name, url))
    assert rep.per_tenant["acme"]["acknowledged"] == 12
    events = drain(sqs, q)
    assert len(events) == 12
    e = sorted(events, key=lambda x: x["detail"]["meterValue"])[0]
    assert e["source"] == "applicationPlaneEventSource" and e["detail-type"] == "ingestUsage"
    assert e["detail"] == {"region": "eu", "tenantId": "acme", "meterApiName": "ApiCalls", "meterValue": 100,
                           "idempotencyKey": e["detail"]["idempotencyKey"]}
    assert e["time"] == "2026-11-01T23:59:59Z"
    assert len({x["detail"]["idempotencyKey"] for x in events}) == 12


def test_rerun_sends_nothing_twice(wh, write_ledger, bus):
    name, q, sqs, url = bus
    write_ledger([{"tenant": "acme", "meter": "api_calls", "start": "2026-11-02", "quantity": "1"}])
    run(wh, cfg_for(name, url))
    run(wh, cfg_for(name, url))
    assert len(drain(sqs, q)) == 1


def test_a_dimension_named_tenantId_cannot_retarget_the_event(wh, write_ledger, bus):
    name, q, sqs, url = bus
    write_ledger([{"tenant": "acme", "meter": "m", "start": "2026-11-02", "quantity": "1",
                   "dims": {"tenantId": "victim", "meterValue": "999"}}])
    run(wh, cfg_for(name, url))
    (e,) = drain(sqs, q)
    assert e["detail"]["tenantId"] == "acme" and e["detail"]["meterValue"] == 1
    assert e["detail"]["dim_tenantId"] == "victim"


class FlakyEntries:
    """The moto client, but the first call answers one entry as throttled (a failed entry)."""

    def __init__(self, client):
        self.client, self.calls = client, []

    def put_events(self, Entries):
        self.calls.append(len(Entries))
        if len(self.calls) == 1:
            resp = self.client.put_events(Entries=Entries[1:])
            resp["Entries"] = [{"ErrorCode": "ThrottlingException", "ErrorMessage": "slow down"}] + resp["Entries"]
            resp["FailedEntryCount"] = 1
            return resp
        return self.client.put_events(Entries=Entries)


def test_failed_entries_are_retried_and_batches_hold_at_most_10(wh, write_ledger, bus):
    name, q, sqs, url = bus
    write_ledger([{"tenant": "acme", "meter": "m", "start": f"2026-11-{d:02d}", "quantity": "1"} for d in range(1, 16)])
    flaky = FlakyEntries(boto3.client("events", endpoint_url=url))
    rep = run(wh, cfg_for(name, url), flaky)
    assert rep.count("acknowledged") == 15 and flaky.calls == [10, 1, 5]
    assert len(drain(sqs, q)) == 15
