"""Stripe billing meter events (``POST /v1/billing/meter_events``) with the official library.

One meter event per ledger entry::

    {"event_name": "<meter's event name>", "payload": {"stripe_customer_id": "cus_...", "value": "25"},
     "identifier": "<idempotency key of the entry>", "timestamp": <last second of the entry's period>}

Stripe's rules, applied before pushing: ``timestamp`` must be within the past 35 calendar days
(older entries are recorded ``stale``; a warning is given ``warn_days`` before that) and at most
5 minutes in the future (entries of a period not over yet are deferred); ``event_name`` and
``identifier`` are at most 100 characters; Stripe enforces ``identifier`` uniqueness over a
rolling 24 hours at least, and the same key is sent as the request's ``Idempotency-Key`` so a
replay returns the first answer. Meter events carry usage, not corrections: a negative entry
(an adjustment down or a credit) is recorded ``rejected`` for a credit note to handle.

.. code-block:: yaml

    exports:
      stripe:
        api_base: http://127.0.0.1:12111     # default https://api.stripe.com (or STRIPE_API_BASE)
        api_key_env: STRIPE_API_KEY          # the variable holding the secret key
        meters: {api_calls: api_requests}    # ledger meter → Stripe event_name (default: same name)
        customer_key: stripe_customer_id     # the meter's customer_mapping.event_payload_key
        value_key: value                     # the meter's value_settings.event_payload_key
        dimension_keys: [region]             # ledger dimensions copied into the payload
        warn_days: 3
        timeout_s: 30
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from tenantry.billing.exporters import (
    Entry, ExportConfigError, Exporter, FatalExportError, Outcome, Section, TransientError, Verdict, decimal_text,
    parse_section,
)

MAX_AGE = dt.timedelta(days=35)
MAX_FUTURE = dt.timedelta(minutes=5)
MAX_NAME = 100


class StripeSection(Section):
    api_base: str | None = None
    api_key_env: str = "STRIPE_API_KEY"
    meters: dict[str, str] = {}
    customer_key: str = "stripe_customer_id"
    value_key: str = "value"
    dimension_keys: list[str] = []
    warn_days: float = 3.0
    timeout_s: float = 30.0


class StripeExporter(Exporter):
    provider = "stripe"
    max_batch = 1  # the v1 endpoint takes one event per call

    def __init__(self, section: StripeSection, client: Any = None):
        self.s = section
        self._client = client

    @classmethod
    def from_config(cls, raw: Any, client: Any = None) -> "StripeExporter":
        return cls(parse_section(StripeSection, raw, "stripe"), client)

    @property
    def client(self) -> Any:
        if self._client is None:
            import stripe

            key = os.environ.get(self.s.api_key_env)
            if not key:
                raise ExportConfigError(f"Stripe export: set {self.s.api_key_env} to the secret API key "
                                        "(it is never read from tenantry.yaml)")
            base = self.s.api_base or os.environ.get("STRIPE_API_BASE")
            # our outbox retries with backoff; the library's own retries would hide attempts
            self._client = stripe.StripeClient(
                key, base_addresses={"api": base} if base else None, max_network_retries=0,
                http_client=stripe.RequestsClient(timeout=self.s.timeout_s) if _has_requests() else None)
        return self._client

    def account(self, tenant_id: str, billing: dict[str, str]) -> str | None:
        return billing.get("stripe_customer_id") or None

    def event_name(self, meter: str) -> str:
        return self.s.meters.get(meter, meter)

    def check(self, entry: Entry, now: dt.datetime) -> Verdict:
        ts = entry.report_time
        if entry.quantity < 0:
            return Verdict("rejected", "negative_quantity: Stripe meter events cannot carry a correction; issue a credit note")
        if len(self.event_name(entry.meter)) > MAX_NAME:
            return Verdict("rejected", f"event_name longer than {MAX_NAME} characters; map it in exports.stripe.meters")
        if ts > now + MAX_FUTURE:
            return Verdict("deferred", "the period is not over yet")
        if ts < now - MAX_AGE:
            return Verdict("stale", f"timestamp {ts:%Y-%m-%d} is more than 35 days in the past; Stripe refuses it")
        left = ts + MAX_AGE - now
        if left < dt.timedelta(days=self.s.warn_days):
            return Verdict(warning=f"Stripe will refuse this entry in {left.total_seconds() / 3600:.1f} h (35-day limit)")
        return Verdict()

    def build(self, entry: Entry, account: str) -> dict[str, Any]:
        payload = {k: entry.dimensions[k] for k in self.s.dimension_keys if k in entry.dimensions}
        payload[self.s.customer_key] = account  # after the dimensions: a dimension can never re-target it
        payload[self.s.value_key] = decimal_text(entry.quantity)
        return {"event_name": self.event_name(entry.meter), "payload": payload,
                "identifier": entry.idempotency_key, "timestamp": int(entry.report_time.timestamp())}

    def push(self, records: list[dict[str, Any]]) -> list[Outcome]:
        import stripe

        (rec,) = records
        try:
            ev = self.client.v1.billing.meter_events.create(params=rec, options={"idempotency_key": rec["identifier"]})
        except (stripe.RateLimitError, stripe.APIConnectionError) as e:
            raise TransientError(f"{type(e).__name__}: {e.user_message or 'no message'}") from None
        except (stripe.AuthenticationError, stripe.PermissionError) as e:
            raise FatalExportError(f"Stripe refused the credentials ({type(e).__name__}); check {self.s.api_key_env}") from None
        except stripe.InvalidRequestError as e:
            msg = (e.user_message or "")[:300]
            if (e.code or "") == "resource_already_exists" or "already exists" in msg:
                return [Outcome("acknowledged", "duplicate: Stripe already has this identifier", rec["identifier"])]
            return [Outcome("rejected", f"{e.http_status} {e.code or ''}: {msg}".strip(), None)]
        except stripe.IdempotencyError as e:
            return [Outcome("rejected", f"idempotency conflict: {(e.user_message or '')[:300]}", None)]
        except stripe.APIError as e:
            if (e.http_status or 500) >= 500:
                raise TransientError(f"Stripe {e.http_status}: {(e.user_message or '')[:200]}") from None
            return [Outcome("rejected", f"{e.http_status}: {(e.user_message or '')[:300]}", None)]
        except stripe.StripeError as e:  # any other status: 409 conflicts, 429 lock timeouts
            if e.http_status in (409, 429) or (e.http_status or 0) >= 500:
                raise TransientError(f"Stripe {e.http_status}: {(e.user_message or '')[:200]}") from None
            return [Outcome("rejected", f"{e.http_status}: {(e.user_message or '')[:300]}", None)]
        return [Outcome("acknowledged", None, getattr(ev, "identifier", None) or rec["identifier"])]


def _has_requests() -> bool:
    try:
        import requests  # noqa: F401
    except ImportError:
        return False
    return True
