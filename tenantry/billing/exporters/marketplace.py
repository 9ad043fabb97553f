"""AWS Marketplace Metering ``BatchMeterUsage`` (SaaS) through boto3.

One ``UsageRecord`` per ledger entry, at most 25 per call and one product per call::

    {"Timestamp": <in the entry's period>, "CustomerAWSAccountId": "123456789012",   # or the older
     "Dimension": "api_calls", "Quantity": 1200,                                      # CustomerIdentifier
     "UsageAllocations": [{"AllocatedUsageQuantity": 1200, "Tags": [{"Key": "region", "Value": "eu"}]}]}

The buyer comes from ``tenants.<id>.billing``: ``aws_customer_account_id`` (with
``aws_license_arn`` for Concurrent Agreements: then no ProductCode is sent), else the older
``aws_customer_identifier`` with ``exports.marketplace.product_code``.

Marketplace keeps one record per customer, dimension and timestamp (a second one with another
quantity comes back ``DuplicateRecord`` and is not honoured). So each entry is reported at its own
second within the last hour of its period (derived from the entry id, so a retry is an
identical, idempotent record), and two entries of a call that would share a second are refused
locally rather than lost. ``Quantity`` is a whole number in the dimension's unit
(``unit_scale`` converts, e.g. GB → MB); a fraction is refused unless ``quantity: decimal``
sends ``QuantityAsDecimal`` (≤ 6 decimals). Records older than ``window_hours`` (24 in the
current API model; older docs say 6) are recorded ``stale``; ``warn_hours`` before that a warning
is given. ``UnprocessedRecords`` are retried; a call refused as a whole (one record out of the
time window spoils all 25) is retried record by record so only the bad one is refused.

.. code-block:: yaml

    exports:
      marketplace:
        product_code: 1a2b3c4d5e            # legacy CustomerIdentifier integrations
        region: us-east-1
        endpoint_url: null
        dimensions: {api_calls: requests}   # ledger meter → Marketplace dimension (default: same)
        unit_scale: {storage_gb: 1000}
        quantity: integer                   # or decimal
        allocation_tags: [region]           # ledger dimensions sent as UsageAllocations tags
        window_hours: 24
        warn_hours: 2
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import Any, Literal

from tenantry.billing.exporters import (
    SECOND, BotoExporter, Entry, ExportConfigError, FatalExportError, Outcome, Section, TransientError, Verdict,
    decimal_text,
)
from tenantry.billing.lakeio import digest

MAX_RECORDS = 25
MAX_QUANTITY = 2_147_483_647
TAG_RE = re.compile(r"^[a-zA-Z0-9+ -=._:\\/@]+$")
DECIMAL_RE = re.compile(r"^(0|[1-9][0-9]{0,9})(\.[0-9]{1,6})?$")
TRANSIENT = {"ThrottlingException", "InternalServiceErrorException", "ServiceUnavailableException",
             "RequestTimeout", "RequestTimeoutException"}
FATAL = {"DisabledApiException", "InvalidProductCodeException", "UnrecognizedClientException",
         "InvalidClientTokenId", "AccessDeniedException", "ExpiredTokenException", "InvalidSignatureException"}


class MarketplaceSection(Section):
    product_code: str | None = None
    region: str | None = None
    endpoint_url: str | None = None
    dimensions: dict[str, str] = {}
    unit_scale: dict[str, Decimal] = {}
    quantity: Literal["integer", "decimal"] = "integer"
    allocation_tags: list[str] = []
    window_hours: float = 24.0
    warn_hours: float = 2.0


class MarketplaceExporter(BotoExporter):
    provider = "marketplace"
    max_batch = MAX_RECORDS

    service = "meteringmarketplace"
    section_model = MarketplaceSection

    def account(self, tenant_id: str, billing: dict[str, str]) -> str | None:
        if billing.get("aws_customer_account_id"):
            arn = billing.get("aws_license_arn")
            return f"acct:{billing['aws_customer_account_id']}" + (f"|{arn}" if arn else "")
        if billing.get("aws_customer_identifier"):
            return f"cid:{billing['aws_customer_identifier']}"
        return None

    def report_time(self, entry: Entry) -> dt.datetime:
        span = min(3600, int((entry.period_end - entry.period_start).total_seconds()))
        offset = int(digest("mp-slot", entry.entry_id, n=12), 16) % max(1, span)
        return (entry.period_end - SECOND - dt.timedelta(seconds=offset)).replace(microsecond=0)

    def quantity(self, entry: Entry) -> tuple[str | None, Any]:
        q = entry.quantity * self.s.unit_scale.get(entry.meter, Decimal(1))
        if q < 0:
            return "negative_quantity: Marketplace takes no corrections; issue a refund or credit", None
        if self.s.quantity == "decimal":
            text = decimal_text(q)
            if not DECIMAL_RE.match(text):
                return f"quantity {text} does not fit QuantityAsDecimal (≤ 10 digits, ≤ 6 decimals)", None
            return None, text
        if q != q.to_integral_value():
            return (f"quantity {decimal_text(q)} is not a whole number of the dimension's unit; set "
                    f"exports.marketplace.unit_scale.{entry.meter} or quantity: decimal"), None
        if q > MAX_QUANTITY:
            return f"quantity {q} exceeds Marketplace's maximum {MAX_QUANTITY}", None
        return None, int(q)

    def check(self, entry: Entry, now: dt.datetime) -> Verdict:
        bad, _ = self.quantity(entry)
        if bad:
            return Verdict("rejected", bad)
        dim = self.s.dimensions.get(entry.meter, entry.meter)
        if not 1 <= len(dim) <= 255:
            return Verdict("rejected", "dimension name must be 1-255 characters")
        tags = self._tags(entry)
        if isinstance(tags, str):
            return Verdict("rejected", tags)
        ts = self.report_time(entry)
        if ts > now:
            return Verdict("deferred", "the period is not over yet")
        window = dt.timedelta(hours=self.s.window_hours)
        if ts <= now - window:
            return Verdict("stale", f"timestamp {ts:%Y-%m-%d %H:%M} is outside Marketplace's {self.s.window_hours:g} h window")
        left = ts + window - now
        if left < dt.timedelta(hours=self.s.warn_hours):
            return Verdict(warning=f"Marketplace will refuse this entry in {left.total_seconds() / 60:.0f} min "
                                   f"({self.s.window_hours:g} h window)")
        return Verdict()

    def _tags(self, entry: Entry) -> list[dict] | str:
        tags = [{"Key": k, "Value": entry.dimensions[k]} for k in self.s.allocation_tags if entry.dimensions.get(k)]
        if len(tags) > 5:
            return "more than 5 allocation tags"
        for t in tags:
            if not (len(t["Key"]) <= 100 and len(t["Value"]) <= 256 and TAG_RE.match(t["Key"]) and TAG_RE.match(t["Value"])):
                return f"allocation tag {t['Key']!r} has characters or a length Marketplace refuses"
        return tags

    def build(self, entry: Entry, account: str) -> dict[str, Any]:
        _, qty = self.quantity(entry)
        rec: dict[str, Any] = {"Timestamp": self.report_time(entry),
                               "Dimension": self.s.dimensions.get(entry.meter, entry.meter)}
        if account.startswith("acct:"):
            acct, _, arn = account[5:].partition("|")
            rec["CustomerAWSAccountId"] = acct
            if arn:
                rec["LicenseArn"] = arn
        else:
            rec["CustomerIdentifier"] = account[4:]
        field = "QuantityAsDecimal" if self.s.quantity == "decimal" else "Quantity"
        rec[field] = qty
        tags = self._tags(entry)
        if tags:
            rec["UsageAllocations"] = [{"Allocated" + ("UsageQuantityAsDecimal" if field == "QuantityAsDecimal"
                                                       else "UsageQuantity"): qty, "Tags": tags}]
        return rec

    def batch_key(self, record: dict[str, Any]) -> Any:
        return "license" if "LicenseArn" in record else "product"

    @staticmethod
    def _ident(r: dict[str, Any]) -> tuple:
        ts = r["Timestamp"]
        return (r.get("CustomerAWSAccountId") or r.get("CustomerIdentifier"), r["Dimension"], int(ts.timestamp()))

    def push(self, records: list[dict[str, Any]]) -> list[Outcome]:
        idents = [self._ident(r) for r in records]
        dup = {i for i in idents if idents.count(i) > 1}
        out: list[Outcome | None] = [Outcome("rejected", "two entries share a customer, dimension and second "
                                             "(Marketplace would keep one)") if i in dup else None for i in idents]
        send = [r for r, o in zip(records, out) if o is None]
        if send:
            answers = self._call(send)
            it = iter(answers)
            out = [o if o is not None else next(it) for o in out]
        return out  # type: ignore[return-value]

    def _call(self, records: list[dict[str, Any]]) -> list[Outcome]:
        from botocore.exceptions import BotoCoreError, ClientError

        kw: dict[str, Any] = {"UsageRecords": records}
        if "LicenseArn" not in records[0]:
            if not self.s.product_code:
                raise ExportConfigError("exports.marketplace.product_code is required for CustomerIdentifier / "
                                        "CustomerAWSAccountId records without aws_license_arn")
            kw["ProductCode"] = self.s.product_code
        try:
            resp = self.client.batch_meter_usage(**kw)
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            msg = e.response.get("Error", {}).get("Message", "")[:300]
            if code in TRANSIENT or e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500:
                raise TransientError(f"{code}: {msg}") from None
            if code in FATAL:
                raise FatalExportError(f"Marketplace refused the call ({code}): {msg}") from None
            if len(records) > 1:  # one bad record refuses the whole call: find it
                return [self._call([r])[0] for r in records]
            if code == "TimestampOutOfBoundsException":
                return [Outcome("stale", f"{code}: {msg}")]
            return [Outcome("rejected", f"{code}: {msg}")]
        except BotoCoreError as e:
            raise TransientError(f"{type(e).__name__}: {e}") from None
        by_ident: dict[tuple, Outcome] = {}
        for res in resp.get("Results", []):
            status = res.get("Status")
            o = (Outcome("acknowledged", None, res.get("MeteringRecordId")) if status == "Success" else
                 Outcome("rejected", f"{status}: a record for this customer, dimension and time with another "
                                     "quantity was already metered") if status == "DuplicateRecord" else
                 Outcome("rejected", str(status)))
            by_ident[self._ident(res["UsageRecord"])] = o
        for res in resp.get("UnprocessedRecords", []):
            by_ident[self._ident(res)] = Outcome("retry", "UnprocessedRecords")
        return [by_ident.get(self._ident(r), Outcome("retry", "missing from the answer")) for r in records]

    def describe(self, record: dict[str, Any]) -> dict[str, Any]:
        return {**record, "Timestamp": record["Timestamp"].isoformat().replace("+00:00", "Z")}
