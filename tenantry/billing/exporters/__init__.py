"""Billing exporters: one per provider, each a small adapter the outbox drives.

An exporter turns a ledger :class:`Entry` into the provider's own record (its field names, its
limits), decides locally what the provider would refuse (too old, negative, malformed), groups
records into calls within the provider's limits, and maps the provider's answer for each record
to an :class:`Outcome`. It never retries and never records: :mod:`tenantry.billing.outbox` does
both, so every provider gets the same exactly-once and retry behaviour.

The ``exports:`` section of tenantry.yaml configures them (see each module for its keys)::

    exports:
      retry: {max_attempts: 5, base_delay_s: 0.5, max_delay_s: 30}
      stripe: {meters: {api_calls: api_requests}}
      marketplace: {product_code: prod-123, region: us-east-1}
      amberflo: {meters: {api_calls: ApiCalls}}
      eventbridge: {event_bus_name: sbt-events}
      file: {dir: exports/ledger, format: csv}

Secrets never come from the config: ``STRIPE_API_KEY``, ``AMBERFLO_API_KEY`` (or the variable
named by ``api_key_env``) and the standard boto3 credential chain.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Iterable

from pydantic import BaseModel, ConfigDict, ValidationError

from tenantry.billing.lakeio import digest

UTC = dt.timezone.utc
SECOND = dt.timedelta(seconds=1)


class ExportConfigError(ValueError):
    """``exports.<provider>`` is invalid or a credential is missing; nothing was pushed after it."""


class TransientError(RuntimeError):
    """A whole call failed in a way worth retrying (throttling, 5xx, connection)."""


class FatalExportError(RuntimeError):
    """The provider refuses every call (bad credentials, disabled API): stop the run."""


@dataclass(frozen=True)
class Entry:
    """A ledger entry as the exporters see it."""

    entry_id: str
    tenant_id: str
    meter: str
    period_start: dt.datetime
    period_end: dt.datetime
    quantity: Decimal
    unit: str | None = None
    dimensions: dict[str, str] = field(default_factory=dict)
    kind: str = "usage"
    revision: int = 0

    @property
    def idempotency_key(self) -> str:
        """The provider idempotency key: stable per ledger entry, 53 ASCII characters (under
        every provider's limit, and safe whatever characters the entry id holds)."""
        return "tnry_" + digest("ledger-entry", self.entry_id, n=48)

    @property
    def report_time(self) -> dt.datetime:
        """The instant a whole-period quantity is reported at: the last second of its period.
        Deterministic, so a retry sends an identical record."""
        return self.period_end - SECOND


@dataclass(frozen=True)
class Outcome:
    """What became of one record: ``acknowledged``, ``rejected``, ``stale`` (final) or
    ``retry`` (push it again)."""

    status: str
    reason: str | None = None
    provider_ref: str | None = None


@dataclass
class Verdict:
    """A local decision before any push: ``stale``/``rejected`` are recorded, ``deferred`` is
    left pending (the period is not over yet), ``ok`` goes out, with ``warning`` reported."""

    status: str = "ok"
    reason: str | None = None
    warning: str | None = None


class Exporter:
    """Base of every exporter. Subclasses set ``provider`` and implement the hooks."""

    provider = "base"
    max_batch = 1

    def account(self, tenant_id: str, billing: dict[str, str]) -> str | None:
        """The tenant's account at this provider, or None (the tenant is not billed here)."""
        raise NotImplementedError

    def check(self, entry: Entry, now: dt.datetime) -> Verdict:
        return Verdict()

    def build(self, entry: Entry, account: str) -> dict[str, Any]:
        raise NotImplementedError

    def batch_key(self, record: dict[str, Any]) -> Any:
        """Records with different keys never share a call (e.g. one product per Marketplace call)."""
        return None

    def batches(self, records: list[dict[str, Any]]) -> Iterable[list[int]]:
        """Indexes of ``records`` grouped into calls within the provider's limits."""
        groups: dict[Any, list[int]] = {}
        for i, r in enumerate(records):
            groups.setdefault(self.batch_key(r), []).append(i)
        for idx in groups.values():
            for k in range(0, len(idx), self.max_batch):
                yield idx[k:k + self.max_batch]

    def push(self, records: list[dict[str, Any]]) -> list[Outcome]:
        """Send one call; one outcome per record, in order. Raise :class:`TransientError` when
        the whole call should be retried, :class:`FatalExportError` when no call can succeed."""
        raise NotImplementedError

    def describe(self, record: dict[str, Any]) -> dict[str, Any]:
        """The record as JSON-able data for ``--dry-run`` output (no secrets in records)."""
        return json.loads(dumps_exact(record))


def parse_section(model: type[BaseModel], raw: Any, key: str) -> Any:
    """Validate ``exports.<key>`` with located errors."""
    try:
        return model.model_validate(raw or {})
    except ValidationError as e:
        msgs = []
        for err in e.errors():
            loc = ".".join(["exports", key, *map(str, err["loc"])])
            msg = "unknown key (check the spelling)" if err["type"] == "extra_forbidden" else err["msg"]
            msgs.append(f"{loc}: {msg}")
        raise ExportConfigError("tenantry.yaml: " + "; ".join(msgs)) from None


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def decimal_text(q: Decimal) -> str:
    """A Decimal as plain positional text without trailing zeros ("25", "0.5", never "2.5E+1")."""
    s = format(q, "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return "0" if s in ("", "-0") else s


def dumps_exact(obj: Any) -> str:
    """JSON where Decimals are exact number literals (json would turn them into floats)."""
    marks: dict[str, str] = {}
    nonce = secrets.token_hex(8)  # so no string in the data can be mistaken for a placeholder

    def default(o: Any) -> Any:
        if isinstance(o, Decimal):
            tok = f"\x00{nonce}:{len(marks)}\x00"
            marks[tok] = decimal_text(o)
            return tok
        if isinstance(o, dt.datetime):
            return o.isoformat().replace("+00:00", "Z")
        raise TypeError(f"not JSON serializable: {type(o).__name__}")

    def walk(o: Any) -> Any:
        if isinstance(o, dict):
            return {k: walk(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [walk(v) for v in o]
        return default(o) if isinstance(o, (Decimal, dt.datetime)) else o

    text = json.dumps(walk(obj), separators=(",", ":"), ensure_ascii=False)
    for tok, lit in marks.items():
        text = text.replace(json.dumps(tok), lit)
    return text


def load(provider: str, exports: dict[str, Any], **kw: Any) -> Exporter:
    """The exporter for ``provider`` configured from the ``exports:`` section."""
    if provider == "stripe":
        from tenantry.billing.exporters.stripe import StripeExporter as cls
    elif provider == "marketplace":
        from tenantry.billing.exporters.marketplace import MarketplaceExporter as cls
    elif provider == "amberflo":
        from tenantry.billing.exporters.amberflo import AmberfloExporter as cls
    elif provider == "eventbridge":
        from tenantry.billing.exporters.eventbridge import EventBridgeExporter as cls
    elif provider == "file":
        from tenantry.billing.exporters.files import FileExporter as cls
    else:
        raise ExportConfigError(f"unknown export target {provider!r}; use stripe, marketplace, amberflo, eventbridge or file")
    return cls.from_config(exports.get(provider), **kw)


PROVIDERS = ("stripe", "marketplace", "amberflo", "eventbridge", "file")
#: billing-account keys in ``tenants.<id>.billing`` that make a tenant billable at a provider
ACCOUNT_KEYS = {
    "stripe": ("stripe_customer_id",),
    "marketplace": ("aws_customer_account_id", "aws_customer_identifier"),
    "amberflo": ("amberflo_customer_id",),
}


class BotoExporter(Exporter):
    """An exporter that talks to an AWS service through boto3. Credentials come from boto3's own
    chain (never from tenantry's config); the section gives region and endpoint (moto in tests).
    boto3's retries are off: the outbox retries and records every attempt per record."""

    service = ""  # the boto3 service name
    section_model: Any = None  # the pydantic model of ``exports.<provider>``

    def __init__(self, section: Any, client: Any = None):
        self.s = section
        self._client = client

    @classmethod
    def from_config(cls, raw: Any, client: Any = None):
        return cls(parse_section(cls.section_model, raw, cls.provider), client)

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config as BotoConfig

            self._client = boto3.client(self.service, region_name=self.s.region, endpoint_url=self.s.endpoint_url,
                                        config=BotoConfig(retries={"total_max_attempts": 1}))
        return self._client
