"""Amberflo meter records (``POST /ingest``), batched as JSON arrays under a size limit.

One record per ledger entry::

    {"customerId": "acme", "meterApiName": "ApiCalls", "meterValue": 1200,
     "meterTimeInMillis": <last millisecond-second of the period>, "uniqueId": "<idempotency key>",
     "dimensions": {"region": "eu"}}

``uniqueId`` is the entry's idempotency key, so Amberflo deduplicates a re-sent record. Amberflo
does not publish a request size limit; batches stay under ``max_batch_bytes`` (default 1 MB) and
``max_batch_records`` (default 100, the official SDK's batch size). Backfills are accepted up to
``max_age_days`` (60, Amberflo's guardrail); older entries are recorded ``stale``. 429 and 5xx
are retried; a 4xx batch is retried record by record so only the bad record is refused.

.. code-block:: yaml

    exports:
      amberflo:
        endpoint: https://app.amberflo.io/ingest
        api_key_env: AMBERFLO_API_KEY
        meters: {api_calls: ApiCalls}           # ledger meter → meterApiName (default: same)
        customer_id: billing                    # billing.amberflo_customer_id, or `tenant_id`
        max_batch_bytes: 1000000
        max_batch_records: 100
        max_age_days: 60
"""

from __future__ import annotations

import datetime as dt
import json
import os
import urllib.error
import urllib.request
from typing import Any, Iterable, Literal

from tenantry.billing.exporters import (
    Entry, ExportConfigError, Exporter, FatalExportError, Outcome, Section, TransientError, Verdict, dumps_exact,
    parse_section,
)


class AmberfloSection(Section):
    endpoint: str = "https://app.amberflo.io/ingest"
    api_key_env: str = "AMBERFLO_API_KEY"
    meters: dict[str, str] = {}
    customer_id: Literal["billing", "tenant_id"] = "billing"
    max_batch_bytes: int = 1_000_000
    max_batch_records: int = 100
    max_age_days: float = 60.0
    timeout_s: float = 30.0


class AmberfloExporter(Exporter):
    provider = "amberflo"

    def __init__(self, section: AmberfloSection, api_key: str | None = None):
        self.s = section
        self.max_batch = section.max_batch_records
        self._key = api_key

    @classmethod
    def from_config(cls, raw: Any, api_key: str | None = None) -> "AmberfloExporter":
        return cls(parse_section(AmberfloSection, raw, "amberflo"), api_key)

    def _api_key(self) -> str:
        key = self._key or os.environ.get(self.s.api_key_env)
        if not key:
            raise ExportConfigError(f"Amberflo export: set {self.s.api_key_env} to the API key "
                                    "(it is never read from tenantry.yaml)")
        return key

    def account(self, tenant_id: str, billing: dict[str, str]) -> str | None:
        if self.s.customer_id == "tenant_id":
            return tenant_id
        return billing.get("amberflo_customer_id") or None

    def check(self, entry: Entry, now: dt.datetime) -> Verdict:
        ts = entry.report_time
        if entry.quantity < 0:
            return Verdict("rejected", "negative_quantity: send corrections as an Amberflo event cancellation")
        if ts > now:
            return Verdict("deferred", "the period is not over yet")
        if ts < now - dt.timedelta(days=self.s.max_age_days):
            return Verdict("stale", f"older than Amberflo's {self.s.max_age_days:g}-day backfill limit")
        if len(dumps_exact(self.build(entry, "x" * 64))) + 2 > self.s.max_batch_bytes:
            return Verdict("rejected", "the record alone is larger than max_batch_bytes")
        return Verdict()

    def build(self, entry: Entry, account: str) -> dict[str, Any]:
        rec: dict[str, Any] = {"customerId": account, "meterApiName": self.s.meters.get(entry.meter, entry.meter),
                               "meterValue": entry.quantity,
                               "meterTimeInMillis": int(entry.report_time.timestamp()) * 1000,
                               "uniqueId": entry.idempotency_key}
        if entry.dimensions:
            rec["dimensions"] = {str(k): str(v) for k, v in entry.dimensions.items()}
        return rec

    def batches(self, records: list[dict[str, Any]]) -> Iterable[list[int]]:
        batch, size = [], 2  # the brackets of the JSON array
        for i, r in enumerate(records):
            n = len(dumps_exact(r).encode()) + 1
            if batch and (size + n > self.s.max_batch_bytes or len(batch) >= self.s.max_batch_records):
                yield batch
                batch, size = [], 2
            batch.append(i)
            size += n
        if batch:
            yield batch

    def push(self, records: list[dict[str, Any]]) -> list[Outcome]:
        body = ("[" + ",".join(dumps_exact(r) for r in records) + "]").encode()
        req = urllib.request.Request(self.s.endpoint, data=body, method="POST", headers={
            "Content-Type": "application/json", "Accept": "application/json", "X-API-KEY": self._api_key()})
        try:
            with urllib.request.urlopen(req, timeout=self.s.timeout_s) as resp:
                text = resp.read(2000).decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            detail = e.read(300).decode("utf-8", "replace")
            if e.code == 429 or e.code >= 500:
                raise TransientError(f"Amberflo {e.code}: {detail}") from None
            if e.code in (401, 403):
                raise FatalExportError(f"Amberflo refused the API key ({e.code}); check {self.s.api_key_env}") from None
            if len(records) > 1:
                return [self.push([r])[0] for r in records]
            return [Outcome("rejected", f"Amberflo {e.code}: {detail}")]
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
            raise TransientError(f"Amberflo unreachable: {getattr(e, 'reason', e)}") from None
        # a 200 answers for the whole array ("2 records were ingested"); uniqueId dedups re-sends
        del text
        return [Outcome("acknowledged", None, r["uniqueId"]) for r in records]

    def describe(self, record: dict[str, Any]) -> dict[str, Any]:
        return json.loads(dumps_exact(record))

