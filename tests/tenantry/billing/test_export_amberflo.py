"""Amberflo ingest records against a local recording server: exact payloads, batching, retries."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from conftest import make_config

from tenantry.billing import exporters
from tenantry.billing.outbox import run_export
from tests.httprecorder import Recorder

NOW = dt.datetime(2026, 11, 20, 12, tzinfo=dt.timezone.utc)


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("AMBERFLO_API_KEY", "af_secret")


def cfg_for(url, **amberflo):
    return make_config({"tenants": {"acme": {"billing": {"amberflo_customer_id": "cust-acme"}}, "beta": {}},
                        "exports": {"retry": {"base_delay_s": 0, "max_attempts": 3},
                                    "amberflo": {"endpoint": url + "/ingest", "meters": {"api_calls": "ApiCalls"},
                                                 **amberflo}}})


def run(wh, cfg):
    return run_export(wh.root, cfg, exporters.load("amberflo", cfg.exports), now=lambda: NOW, sleep=lambda s: None)


def test_records_use_amberflo_field_names_and_exact_values(wh, write_ledger):
    write_ledger([{"tenant": "acme", "meter": "api_calls", "start": "2026-11-18", "quantity": "1200.125",
                   "dims": {"region": "eu", "plan": "pro"}}])
    with Recorder(default=(200, b"1 records were ingested")) as rec:
        rep = run(wh, cfg_for(rec.url))
    (req,) = rec.requests
    assert req.path == "/ingest" and req.headers["x-api-key"] == "af_secret"
    assert req.headers["content-type"] == "application/json"
    body = json.loads(req.body, parse_float=str)
    ms = int(dt.datetime(2026, 11, 18, 23, 59, 59, tzinfo=dt.timezone.utc).timestamp()) * 1000
    assert body == [{"customerId": "cust-acme", "meterApiName": "ApiCalls", "meterValue": "1200.125",
                     "meterTimeInMillis": ms, "uniqueId": body[0]["uniqueId"],
                     "dimensions": {"region": "eu", "plan": "pro"}}]
    assert b'"meterValue":1200.125' in req.body  # a JSON number, exact
    assert rep.per_tenant["acme"]["acknowledged"] == 1 and rep.per_tenant["beta"] == {}


def test_batches_stay_under_the_size_and_count_limits(wh, write_ledger):
    rows = [{"tenant": "acme", "meter": "api_calls", "start": f"2026-11-{d:02d}", "quantity": str(d),
             "dims": {"k": "v" * 200}} for d in range(1, 19)]
    write_ledger(rows)
    with Recorder(default=(200, b"ok")) as rec:
        rep = run(wh, cfg_for(rec.url, max_batch_bytes=1500, max_batch_records=5))
    assert rep.count("acknowledged") == 18
    assert all(len(r.body) <= 1500 and len(r.json()) <= 5 for r in rec.requests)
    assert sum(len(r.json()) for r in rec.requests) == 18 and len(rec.requests) >= 4
    assert len({u["uniqueId"] for r in rec.requests for u in r.json()}) == 18


def test_a_bad_record_is_isolated_and_the_rest_acknowledged(wh, write_ledger):
    write_ledger([{"tenant": "acme", "meter": "api_calls", "start": f"2026-11-0{d}", "quantity": str(d)} for d in (1, 2, 3)])

    def respond(req):  # the record with value 2 is refused, and spoils any batch it is in
        return (400, {"error": "bad record"}) if any(r["meterValue"] == 2 for r in req.json()) else (200, b"ok")

    with Recorder(responder=respond) as rec:
        rec.script([(500, {"error": "down"})])
        rep = run(wh, cfg_for(rec.url))
    # 500 → retried; 400 on the batch → record by record: only the bad one is refused
    assert rep.count("acknowledged") == 2 and rep.count("rejected") == 1
    assert [len(r.json()) for r in rec.requests] == [3, 3, 1, 1, 1]


def test_unauthorized_stops_the_run_and_keeps_entries_pending(wh, write_ledger):
    write_ledger([{"tenant": "acme", "meter": "api_calls", "start": "2026-11-01", "quantity": "1"}])
    with Recorder(default=(401, {"message": "Unauthorized"})) as rec:
        with pytest.raises(exporters.FatalExportError, match="AMBERFLO_API_KEY"):
            run(wh, cfg_for(rec.url))
        rec.default = (200, b"ok")
        assert run(wh, cfg_for(rec.url)).count("acknowledged") == 1


def test_entries_past_the_backfill_limit_are_stale(wh, write_ledger):
    write_ledger([{"tenant": "acme", "meter": "api_calls", "start": "2026-09-01", "quantity": "1"}])
    with Recorder(default=(200, b"ok")) as rec:
        rep = run(wh, cfg_for(rec.url))
    assert rep.count("stale") == 1 and rec.requests == []
