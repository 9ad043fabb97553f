"""Amazon EventBridge: one event per ledger entry, shaped for the AWS SaaS Builder Toolkit.

SBT's metering listeners subscribe to ``detail-type: ingestUsage`` from the application-plane
source (``applicationPlaneEventSource`` by default) and read ``detail.tenantId``,
``detail.meterApiName`` and ``detail.meterValue``; every other detail key becomes a usage
dimension. So the detail is flat::

    {"tenantId": "acme", "meterApiName": "api_calls", "meterValue": 1200,
     "region": "eu", "idempotencyKey": "tnry_..."}

Ledger dimensions are copied as strings; one named like a reserved key (``tenantId``,
``meterApiName``, ``meterValue``, ``idempotencyKey``) is prefixed ``dim_`` so it can never
re-target the event at another tenant. EventBridge has no deduplication: consumers that must
count exactly once deduplicate on ``idempotencyKey``. ``put_events`` takes at most 10 entries
and 256 KB per call (sizes counted as EventBridge does); failed entries are retried when their
error is transient (throttling, internal) and refused otherwise.

.. code-block:: yaml

    exports:
      eventbridge:
        event_bus_name: sbt-events
        source: applicationPlaneEventSource
        detail_type: ingestUsage
        meters: {api_calls: ApiCalls}       # ledger meter → meterApiName (default: same)
        include_idempotency_key: true
        region: us-east-1
        endpoint_url: null
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Iterable

from tenantry.billing.exporters import (
    BotoExporter, Entry, FatalExportError, Outcome, Section, TransientError, Verdict, dumps_exact,
)

MAX_ENTRIES = 10
MAX_BYTES = 256 * 1024
RESERVED = ("tenantId", "meterApiName", "meterValue", "idempotencyKey")
TRANSIENT = {"ThrottlingException", "InternalException", "InternalFailure", "ServiceUnavailable",
             "ServiceUnavailableException"}
FATAL = {"AccessDeniedException", "UnrecognizedClientException", "InvalidClientTokenId", "ExpiredTokenException",
         "ResourceNotFoundException", "InvalidSignatureException"}


class EventBridgeSection(Section):
    event_bus_name: str = "default"
    source: str = "applicationPlaneEventSource"
    detail_type: str = "ingestUsage"
    meters: dict[str, str] = {}
    include_idempotency_key: bool = True
    region: str | None = None
    endpoint_url: str | None = None


def entry_size(e: dict[str, Any]) -> int:
    """The size EventBridge counts for a PutEvents entry (Time is 14 bytes when set)."""
    n = 14 if e.get("Time") else 0
    for k in ("Source", "DetailType", "Detail"):
        n += len(e.get(k, "").encode())
    n += sum(len(r.encode()) for r in e.get("Resources", []))
    return n


class EventBridgeExporter(BotoExporter):
    provider = "eventbridge"
    max_batch = MAX_ENTRIES

    service = "events"
    section_model = EventBridgeSection

    def account(self, tenant_id: str, billing: dict[str, str]) -> str | None:
        return tenant_id  # the event names the tenant; SBT maps it to the billing customer

    def detail(self, entry: Entry) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for k, v in entry.dimensions.items():
            d[f"dim_{k}" if k in RESERVED or k.startswith("dim_") else str(k)] = str(v)
        d["tenantId"] = entry.tenant_id
        d["meterApiName"] = self.s.meters.get(entry.meter, entry.meter)
        d["meterValue"] = entry.quantity
        if self.s.include_idempotency_key:
            d["idempotencyKey"] = entry.idempotency_key
        return d

    def build(self, entry: Entry, account: str) -> dict[str, Any]:
        return {"Time": entry.report_time, "Source": self.s.source, "DetailType": self.s.detail_type,
                "Detail": dumps_exact(self.detail(entry)), "EventBusName": self.s.event_bus_name, "Resources": []}

    def check(self, entry: Entry, now: dt.datetime) -> Verdict:
        if entry_size(self.build(entry, entry.tenant_id)) > MAX_BYTES:
            return Verdict("rejected", "the event is larger than EventBridge's 256 KB limit")
        return Verdict()

    def batches(self, records: list[dict[str, Any]]) -> Iterable[list[int]]:
        batch, size = [], 0
        for i, r in enumerate(records):
            n = entry_size(r)
            if batch and (size + n > MAX_BYTES or len(batch) >= MAX_ENTRIES):
                yield batch
                batch, size = [], 0
            batch.append(i)
            size += n
        if batch:
            yield batch

    def push(self, records: list[dict[str, Any]]) -> list[Outcome]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            resp = self.client.put_events(Entries=records)
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            msg = e.response.get("Error", {}).get("Message", "")[:300]
            if code in TRANSIENT or e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500:
                raise TransientError(f"{code}: {msg}") from None
            if code in FATAL:
                raise FatalExportError(f"EventBridge refused the call ({code}): {msg}") from None
            if len(records) > 1:
                return [self.push([r])[0] for r in records]
            return [Outcome("rejected", f"{code}: {msg}")]
        except BotoCoreError as e:
            raise TransientError(f"{type(e).__name__}: {e}") from None
        out = []
        for r in resp.get("Entries", []):
            if r.get("EventId"):
                out.append(Outcome("acknowledged", None, r["EventId"]))
            elif r.get("ErrorCode") in TRANSIENT:
                out.append(Outcome("retry", f"{r['ErrorCode']}: {r.get('ErrorMessage', '')[:200]}"))
            else:
                out.append(Outcome("rejected", f"{r.get('ErrorCode')}: {r.get('ErrorMessage', '')[:200]}"))
        if len(out) != len(records):  # the answer always has one entry per request entry; be safe
            return [Outcome("retry", "answer did not match the request")] * len(records)
        return out

    def describe(self, record: dict[str, Any]) -> dict[str, Any]:
        return {**record, "Time": record["Time"].isoformat().replace("+00:00", "Z"),
                "Detail": json.loads(record["Detail"])}
