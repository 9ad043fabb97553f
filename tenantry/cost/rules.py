"""The ``cost:`` section of tenantry.yaml: where cost comes from and how it is allocated to tenants.

Rules are evaluated **in order**; the first rule that matches a cost line *and can allocate it*
takes the line. A ``direct`` rule can allocate a line that carries the tenant tag; a
``proportional`` rule one whose driver measured something in the line's charge period; ``even``
one with at least one tenant; ``fixed`` and ``shared`` always can. A line no rule takes is
*unallocated* with a reason (``tenantry.schemas.CostReason``): nothing is guessed, nothing vanishes.

``shared`` lines (and the unused capacity of AWS split cost allocation, category ``idle``, when
a rule sends it there) follow ``shared_policy``: ``spread`` them over tenants in proportion to
the cost already allocated to each tenant that day, or keep them as ``__platform__``.

Example (every option)::

    cost:
      currency: USD                 # for cost.csv files without a currency column
      tag_key: tenant               # tenant tag; tried as given, then "user:tenant", "user_tenant"
      focus_cost_column: EffectiveCost   # or BilledCost (FOCUS only; CUR uses unblended cost)
      allocation_unit: "0.000000001"     # smallest amount a share is made of ("0.01" = cents)
      shared_policy: spread         # spread | platform
      s3:                           # for s3:// paths (moto, MinIO, ... via endpoint_url)
        endpoint_url: http://127.0.0.1:5000
        region: us-east-1
      rules:
        - name: tagged
          method: direct            # the tenant named by the line's tag gets all of it
        - name: compute
          match: {services: ["Amazon Elastic Compute Cloud*", AmazonEC2, AmazonECS]}
          method: proportional
          driver: duration          # requests | duration | meter:<name> | attribute:<span key>
                                    # | dynamodb_capacity
          driver_services: [demo-shop]   # telemetry service_name filter (default: all)
        - name: support
          match: {services: ["AWS Support*"]}
          method: fixed
          percentages: {acme: 50, globex: 30, __platform__: 20}
        - name: onboarding
          match: {resource_ids: ["arn:aws:s3:::onboarding-*"]}
          method: even
          tenants: [hooli, piedpiper]    # default: the catalog (tenants:), else active tenants
        - name: idle-capacity
          match: {categories: [idle, split_residual]}
          method: shared

Matching: ``services``, ``categories`` and ``resource_ids`` are lists of shell-style globs (any
one may match; an absent list matches everything), ``tags`` is a map of exact tag values (all
must match). A rule with no ``match`` matches every line.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tenantry.conventions import TENANT_ID_RE, TENANT_ID_RULE
from tenantry.schemas import PLATFORM


class CostConfigError(ValueError):
    """The ``cost:`` section is invalid; the message names the file, the key and what to write."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


DRIVER_RE = re.compile(r"\A(requests|duration|dynamodb_capacity|meter:[^\s]{1,200}|attribute:[^\s]{1,200})\Z")
_CURRENCY_RE = re.compile(r"\A[A-Z]{3}\Z")


class Match(_Model):
    services: list[str] | None = None
    categories: list[str] | None = None
    resource_ids: list[str] | None = None
    tags: dict[str, str] = Field(default_factory=dict)


class Rule(_Model):
    name: str = Field(min_length=1, max_length=100)
    method: Literal["direct", "proportional", "even", "fixed", "shared"]
    match: Match = Field(default_factory=Match)
    driver: str | None = None
    driver_services: list[str] | None = None
    percentages: dict[str, Decimal] | None = None
    tenants: list[str] | None = None

    @field_validator("driver")
    @classmethod
    def _driver(cls, v: str | None) -> str | None:
        if v is not None and not DRIVER_RE.match(v):
            raise ValueError(
                f"unknown driver {v!r}; use requests, duration, dynamodb_capacity, meter:<name> "
                "or attribute:<span attribute key>"
            )
        return v

    @field_validator("tenants")
    @classmethod
    def _tenants(cls, v: list[str] | None) -> list[str] | None:
        for t in v or []:
            if t != PLATFORM and not TENANT_ID_RE.match(t):
                raise ValueError(f"tenant id {t!r} is not valid: use {TENANT_ID_RULE}")
        if v is not None and not v:
            raise ValueError("an empty tenants list allocates nothing; omit it to use the catalog")
        return v

    @model_validator(mode="after")
    def _method_options(self) -> "Rule":
        m = self.method
        if m == "proportional" and not self.driver:
            raise ValueError(f"rule {self.name!r}: method proportional needs a driver (e.g. driver: requests)")
        if m != "proportional" and (self.driver or self.driver_services):
            raise ValueError(f"rule {self.name!r}: driver/driver_services only apply to method proportional")
        if m == "fixed":
            if not self.percentages:
                raise ValueError(f"rule {self.name!r}: method fixed needs percentages: {{tenant: percent, ...}}")
            for t, p in self.percentages.items():
                if t != PLATFORM and not TENANT_ID_RE.match(t):
                    raise ValueError(f"rule {self.name!r}: percentages: tenant id {t!r} is not valid")
                if not p.is_finite() or p < 0:
                    raise ValueError(f"rule {self.name!r}: percentages.{t}: must be a number >= 0")
            total = sum(self.percentages.values(), Decimal(0))
            if total != 100:
                raise ValueError(f"rule {self.name!r}: percentages add up to {total}, not 100")
        elif self.percentages is not None:
            raise ValueError(f"rule {self.name!r}: percentages only apply to method fixed")
        if self.tenants is not None and m != "even":
            raise ValueError(f"rule {self.name!r}: tenants only applies to method even")
        return self


class S3Options(_Model):
    endpoint_url: str | None = None
    region: str | None = None


class CostConfig(_Model):
    currency: str = "USD"
    tag_key: str = Field(default="tenant", min_length=1, max_length=128)
    focus_cost_column: Literal["EffectiveCost", "BilledCost"] = "EffectiveCost"
    allocation_unit: Decimal = Decimal("0.000000001")
    shared_policy: Literal["spread", "platform"] = "spread"
    s3: S3Options = Field(default_factory=S3Options)
    rules: list[Rule] = Field(default_factory=list)

    @field_validator("currency")
    @classmethod
    def _currency(cls, v: str) -> str:
        if not _CURRENCY_RE.match(v):
            raise ValueError(f"currency {v!r}: use an ISO 4217 code such as USD or EUR")
        return v

    @field_validator("allocation_unit", mode="before")
    @classmethod
    def _unit(cls, v: Any) -> Decimal:
        try:
            d = Decimal(str(v))
        except InvalidOperation:
            raise ValueError(f"allocation_unit {v!r}: write a decimal such as \"0.01\"") from None
        if not d.is_finite() or d <= 0 or d != d.quantize(Decimal("1e-9")) or d > 1:
            raise ValueError(
                f"allocation_unit {v!r}: must be more than 0 and at most 1, with at most 9 decimal places "
                "(e.g. \"0.01\" for cents)"
            )
        return d

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, v: list[Rule]) -> list[Rule]:
        names = [r.name for r in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate rule names: {', '.join(dupes)}")
        return v

    @property
    def tag_keys(self) -> list[str]:
        """The tag keys tried, in order: as given, FOCUS-from-AWS style, CUR 2.0 style."""
        k = self.tag_key
        return [k, f"user:{k}", f"user_{k}"]


def parse_cost(data: Any, source: str = "tenantry.yaml") -> CostConfig:
    """Validate the ``cost:`` mapping. Errors read ``tenantry.yaml: cost.rules.1.driver: ...``."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise CostConfigError(f"{source}: cost: expected a mapping, got {type(data).__name__}")
    try:
        return CostConfig.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(p) for p in ("cost", *err["loc"]))
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key (check the spelling; see tenantry.cost.rules for every option)"
            lines.append(f"{source}: {loc}: {msg}")
        raise CostConfigError("\n".join(lines)) from None


def from_config(cfg: Any) -> CostConfig:
    """The cost settings of a loaded :class:`tenantry.config.Config` (or a plain dict, or None)."""
    if cfg is None:
        return CostConfig()
    if isinstance(cfg, CostConfig):
        return cfg
    if isinstance(cfg, dict):
        return parse_cost(cfg)
    return parse_cost(getattr(cfg, "cost", None) or {})
