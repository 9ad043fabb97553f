"""Stripe meter events through the official library against a local recording server."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from conftest import make_config

from tests.httprecorder import Recorder
from tenantry.billing import exporters, lakeio
from tenantry.billing.outbox import run_export

NOW = dt.datetime(2026, 11, 20, 12, tzinfo=dt.timezone.utc)
SECRET = "sk_test_tenantry_secret_value"


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("STRIPE_API_KEY", SECRET)


def stripe_like(seen: set):
    """Answers like Stripe: an event per identifier, deduplicated on it."""
    def respond(req):
        form = req.form()
        seen.add(form["identifier"])
        return 200, {"object": "billing.meter_event", "identifier": form["identifier"], "event_name": form["event_name"],
                     "payload": {}, "timestamp": int(form["timestamp"]), "created": 1, "livemode": False}
    return respond


def setup(write_ledger, url, rows=None):
    write_ledger(rows or [
        {"tenant": "acme", "meter": "api_calls", "start": "2026-11-18", "quantity": "1200", "dims": {"region": "eu"}},
        {"tenant": "acme", "meter": "seats", "start": "2026-11-19", "quantity": "2.5"},
        {"tenant": "nobill", "meter": "api_calls", "start": "2026-11-19", "quantity": "3"},
    ])
    return make_config({
        "tenants": {"acme": {"plan": None, "billing": {"stripe_customer_id": "cus_acme"}}, "nobill": {}},
        "exports": {"retry": {"base_delay_s": 0, "max_attempts": 3},
                    "stripe": {"api_base": url, "meters": {"api_calls": "api_requests"}, "dimension_keys": ["region"]}}})


def run(wh, cfg, **kw):
    return run_export(wh.root, cfg, exporters.load("stripe", cfg.exports), period="2026-11", now=lambda: NOW,
                      sleep=lambda s: None, seed=1, **kw)


def test_meter_events_carry_stripe_field_names_exactly(wh, write_ledger):
    seen: set = set()
    with Recorder(responder=stripe_like(seen)) as rec:
        cfg = setup(write_ledger, rec.url)
        rep = run(wh, cfg)
    assert rep.per_tenant["acme"]["acknowledged"] == 2 and rep.per_tenant["nobill"]["no_account"] == 1
    first = rec.requests[0]
    assert first.method == "POST" and first.path == "/v1/billing/meter_events"
    form = first.form()
    ts = int(dt.datetime(2026, 11, 18, 23, 59, 59, tzinfo=dt.timezone.utc).timestamp())
    assert form == {"event_name": "api_requests", "payload[region]": "eu", "payload[stripe_customer_id]": "cus_acme",
                    "payload[value]": "1200", "identifier": form["identifier"], "timestamp": str(ts)}
    assert form["identifier"].startswith("tnry_") and len(form["identifier"]) <= 100
    assert first.headers["idempotency-key"] == form["identifier"]
    assert first.headers["authorization"] == f"Bearer {SECRET}"
    assert rec.requests[1].form()["payload[value]"] == "2.5"


def test_server_errors_are_retried_with_the_same_identifier(wh, write_ledger):
    seen: set = set()
    with Recorder(responder=stripe_like(seen)) as rec:
        rec.script([(500, {"error": {"message": "boom", "type": "api_error"}}),
                    (429, {"error": {"message": "slow down", "type": "rate_limit_error"}})])
        cfg = setup(write_ledger, rec.url)
        rep = run(wh, cfg)
    assert rep.count("acknowledged") == 2 and rep.count("failed") == 0
    ids = [r.form()["identifier"] for r in rec.requests]
    assert len(rec.requests) == 4 and ids[0] == ids[1] == ids[2]


def test_a_push_that_keeps_failing_is_recorded_failed_and_retried_next_run(wh, write_ledger):
    seen: set = set()
    with Recorder(default=(503, {"error": {"message": "down", "type": "api_error"}})) as rec:
        cfg = setup(write_ledger, rec.url)
        rep = run(wh, cfg)
        assert rep.count("failed") == 2 and len(rec.requests) == 6  # 3 attempts each
        assert {t for t, _, why in rep.problems} == {"acme"}
        rec.responder, rec.default = stripe_like(seen), None
        rep2 = run(wh, cfg)
    assert rep2.count("acknowledged") == 2 and len(seen) == 2


def test_invalid_requests_are_rejected_not_retried(wh, write_ledger):
    with Recorder(default=(400, {"error": {"message": "No such meter", "type": "invalid_request_error",
                                           "code": "resource_missing"}})) as rec:
        cfg = setup(write_ledger, rec.url)
        rep = run(wh, cfg)
        assert rep.count("rejected") == 2 and len(rec.requests) == 2
        again = run(wh, cfg)
    assert again.count("rejected") == 0 and len(rec.requests) == 2  # final: never pushed twice


def test_crash_between_push_and_record_repushes_with_the_same_key_and_no_duplicate(wh, write_ledger, monkeypatch):
    seen: set = set()
    real = lakeio.commit_run

    def crash(*a, **k):
        raise KeyboardInterrupt("killed before the outbox commit")

    with Recorder(responder=stripe_like(seen)) as rec:
        cfg = setup(write_ledger, rec.url)
        monkeypatch.setattr(lakeio, "commit_run", crash)
        with pytest.raises(KeyboardInterrupt):
            run(wh, cfg)
        monkeypatch.setattr(lakeio, "commit_run", real)
        run(wh, cfg)
        third = run(wh, cfg)
    ids = [r.form()["identifier"] for r in rec.requests]
    assert len(ids) == 4 and ids[:2] == ids[2:]  # the re-push is identical: Stripe deduplicates it
    assert len(seen) == 2 and third.count("acknowledged") == 0


def test_stale_and_future_entries_follow_stripes_time_rules(wh, write_ledger):
    with Recorder(responder=stripe_like(set())) as rec:
        cfg = setup(write_ledger, rec.url, rows=[
            {"tenant": "acme", "meter": "m", "start": "2026-10-10", "quantity": "1"},    # > 35 days old
            {"tenant": "acme", "meter": "m", "start": "2026-10-17", "quantity": "1"},    # inside, near the edge
            {"tenant": "acme", "meter": "m", "start": "2026-11-20", "quantity": "1"},    # period not over
            {"tenant": "acme", "meter": "m", "start": "2026-11-18", "quantity": "-4"},   # a correction
        ])
        rep = run_export(wh.root, cfg, exporters.load("stripe", cfg.exports), now=lambda: NOW, sleep=lambda s: None)
    c = rep.per_tenant["acme"]
    assert (c["stale"], c["acknowledged"], c["deferred"], c["rejected"]) == (1, 1, 1, 1)
    assert any("35-day" in w for w in rep.warnings)
    assert len(rec.requests) == 1


def test_dry_run_pushes_and_records_nothing(wh, write_ledger):
    with Recorder(responder=stripe_like(set())) as rec:
        cfg = setup(write_ledger, rec.url)
        rep = run(wh, cfg, dry_run=True)
    assert rec.requests == [] and rep.count("would_push") == 2
    assert rep.payloads[0]["payload"] == {"region": "eu", "stripe_customer_id": "cus_acme", "value": "1200"}


def test_a_dimension_cannot_retarget_the_customer(wh, write_ledger):
    with Recorder(responder=stripe_like(set())) as rec:
        cfg = setup(write_ledger, rec.url, rows=[{"tenant": "acme", "meter": "m", "start": "2026-11-18", "quantity": "1",
                                                  "dims": {"region": "eu", "stripe_customer_id": "cus_evil"}}])
        cfg = make_config({**cfg.model_dump(), "exports": {**cfg.exports, "stripe": {
            **cfg.exports["stripe"], "dimension_keys": ["region", "stripe_customer_id"]}}})
        run(wh, cfg)
    assert rec.requests[0].form()["payload[stripe_customer_id]"] == "cus_acme"


def test_the_api_key_is_never_written_to_the_warehouse(wh, write_ledger):
    with Recorder(responder=stripe_like(set())) as rec:
        rec.script([(400, {"error": {"message": "bad meter", "type": "invalid_request_error"}})])
        cfg = setup(write_ledger, rec.url)
        run(wh, cfg)
    blobs = b"".join(p.read_bytes() for p in Path(wh.root).rglob("*") if p.is_file())
    assert SECRET.encode() not in blobs


def test_missing_api_key_is_a_clear_error(wh, write_ledger, monkeypatch):
    monkeypatch.delenv("STRIPE_API_KEY")
    cfg = setup(write_ledger, "http://127.0.0.1:9")
    with pytest.raises(exporters.ExportConfigError, match="STRIPE_API_KEY"):
        run(wh, cfg)
