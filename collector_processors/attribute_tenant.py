"""``attribute_tenant``: decide which tenant every row belongs to, and never guess.

The tenant id is taken from the first source in ``precedence`` that has a non-empty value:

- ``attribute``: the row's ``attributes[attribute_key]`` (spans, logs, metric points);
- ``resource``: ``resource_attributes[resource_key]``;
- ``column``: the ``tenant_id`` the decoder already set (e.g. from the request's credentials);
  ``__unattributed__`` and the empty string count as no value;
- ``service``: ``service_tenants[service_name]``, for single-tenant deployments;
- ``api_key``: ``api_keys[attributes[api_key_attribute]]``.

The winning value must match ``tenantry.config.TENANT_ID_RE`` (1-128 letters, digits and
``. _ : @ -``); anything else (quotes, SQL, markup, 10k characters, reserved ``__x__`` ids) is
quarantined as ``invalid_tenant_id`` and never reaches a SQL string or a tenant column. A later
source does not rescue an invalid earlier one: a hostile value is a signal, not noise.

With a tenant catalog (``tenants:`` in tenantry.yaml) an id that is not in it is ``unknown_tenant``;
with no catalog (the default) every well-formed id is accepted. ``policy`` decides what happens to
missing and unknown tenants: ``unattributed`` keeps the row under ``__unattributed__`` (counted as
``unattributed:<reason>``), ``quarantine`` quarantines it. Quarantine rows and counters of rejected
rows carry ``__unattributed__`` as tenant; the original value is in the quarantine row's ``raw``.

``tenant_tier`` (spans, logs, metric points) is set from the catalog when there is one (the app's own
claim is not trusted then); without a catalog it keeps the row's ``tenant_tier`` or falls back to
``attributes[tier_key]``. The tenant's plan is not a column: downstream code looks it up in the
catalog by ``tenant_id``.

Example (every option)::

    processors:
      - attribute_tenant:
          precedence: [attribute, resource, column, service, api_key]
          attribute_key: tenant.id
          resource_key: tenant.id
          tier_key: tenant.tier
          service_tenants: {billing-worker: acme}
          api_key_attribute: tenant.api_key
          api_keys: {"k_live_3f9a": globex}
          policy: quarantine          # or unattributed (the default)
"""

from __future__ import annotations

from collections import Counter
from typing import Literal, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from collector_processors import base, maps
from collector_processors.base import Processor, ProcessorConfigError, Result
from collector_processors.options import Options
from tenantry import schemas
from tenantry.config import TENANT_ID_RE, Tenant

Source = Literal["attribute", "resource", "column", "service", "api_key"]
_TIER_RE = r"\A[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}\z"
#: TENANT_ID_RE in RE2 spelling (Python's end-of-text \Z is RE2's \z)
TENANT_ID_RE2 = TENANT_ID_RE.pattern.replace(r"\Z", r"\z")


class AttributeTenantOptions(Options):
    #: sources of the tenant id, first non-empty value wins
    precedence: list[Source] = Field(default_factory=lambda: ["attribute", "resource", "column", "service", "api_key"])
    #: key of the tenant id in a span's / log record's / metric point's attributes
    attribute_key: str = schemas.TENANT_ID_KEY
    #: key of the tenant id in resource_attributes
    resource_key: str = schemas.TENANT_ID_KEY
    #: key of the tier in attributes, used only when there is no catalog and no tenant_tier
    tier_key: str = schemas.TENANT_TIER_KEY
    #: service_name -> tenant id, for services that serve exactly one tenant
    service_tenants: dict[str, str] = Field(default_factory=dict)
    #: attribute holding an API key, looked up in api_keys
    api_key_attribute: str = "tenant.api_key"
    #: API key -> tenant id (secret: never printed)
    api_keys: dict[str, str] = Field(default_factory=dict)
    #: what to do with a missing or unknown tenant: unattributed (keep under __unattributed__) or quarantine
    policy: Literal["unattributed", "quarantine"] = "unattributed"

    _secret_fields = frozenset({"api_keys"})

    @field_validator("precedence")
    @classmethod
    def _precedence(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("expected at least one source: attribute, resource, column, service, api_key")
        dupes = sorted({s for s in v if v.count(s) > 1})
        if dupes:
            raise ValueError(f"sources listed twice: {', '.join(dupes)}")
        return v

    @field_validator("service_tenants", "api_keys")
    @classmethod
    def _tenant_values(cls, v: dict[str, str]) -> dict[str, str]:
        for k, tid in v.items():
            if not TENANT_ID_RE.match(str(tid)):
                shown = "<secret>" if len(k) > 8 else k
                raise ValueError(f"{shown}: tenant id {tid!r} is not valid: use 1-128 letters, digits and . _ : @ -")
        return v


class AttributeTenant(Processor):
    """Resolve ``tenant_id`` by precedence, validate it, enrich ``tenant_tier`` (see module doc)."""

    type_name = "attribute_tenant"
    accepts_views = True

    def __init__(
        self,
        name: str | None = None,
        options: Mapping | AttributeTenantOptions | None = None,
        tenants: Mapping[str, Tenant] | None = None,
    ):
        super().__init__(name)
        self.options = (
            options if isinstance(options, AttributeTenantOptions) else AttributeTenantOptions.build(options, self.name)
        )
        self.catalog = dict(tenants or {})
        o = self.options
        if self.catalog:
            for field in ("service_tenants", "api_keys"):
                for k, tid in getattr(o, field).items():
                    if tid not in self.catalog:
                        shown = "<secret>" if field == "api_keys" else k
                        raise ProcessorConfigError(
                            f"{self.name}: {field}.{shown}: unknown tenant {tid!r}; known tenants: "
                            + ", ".join(sorted(self.catalog)[:20])
                        )
        self._catalog_ids = pa.array(sorted(self.catalog), pa.string())
        self._catalog_tiers = pa.array([self.catalog[t].tier for t in sorted(self.catalog)], pa.string())
        self._svc_keys = pa.array(list(o.service_tenants), pa.string())
        self._svc_vals = pa.array(list(o.service_tenants.values()), pa.string())
        self._api_keys = pa.array(list(o.api_keys), pa.string())
        self._api_vals = pa.array(list(o.api_keys.values()), pa.string())

    # -- sources ---------------------------------------------------------------------------
    def _source(self, src: str, batch: pa.Table, views: maps.BatchViews | None) -> pa.Array | None:
        o = self.options
        cols = batch.column_names
        if src == "attribute" and "attributes" in cols:
            return maps.entries_of(batch.column("attributes"), views).lookup(o.attribute_key)
        if src == "resource" and "resource_attributes" in cols:
            return maps.entries_of(batch.column("resource_attributes"), views).lookup(o.resource_key)
        if src == "column":
            return batch.column("tenant_id")
        if src == "service" and len(self._svc_keys):
            return _map_through(batch.column("service_name"), self._svc_keys, self._svc_vals)
        if src == "api_key" and len(self._api_keys) and "attributes" in cols:
            key = maps.entries_of(batch.column("attributes"), views).lookup(o.api_key_attribute)
            return _map_through(key, self._api_keys, self._api_vals)
        return None

    def _resolve(self, batch: pa.Table, views: maps.BatchViews | None) -> pa.Array:
        resolved = pa.nulls(batch.num_rows, pa.string())
        for src in self.options.precedence:
            cand = self._source(src, batch, views)
            if cand is None:
                continue
            if isinstance(cand, pa.ChunkedArray):
                cand = cand.combine_chunks()
            blank = pc.or_(pc.equal(cand, ""), pc.equal(cand, schemas.UNATTRIBUTED))
            cand = pc.if_else(blank, pa.scalar(None, pa.string()), cand)
            resolved = pc.coalesce(resolved, cand)
        return resolved

    # -- process ---------------------------------------------------------------------------
    def process(self, table: str, batch: pa.Table | pa.RecordBatch, views: maps.BatchViews | None = None) -> Result:
        batch = base.as_table(batch)
        if batch.num_rows == 0:
            return Result(batch, schemas.empty("quarantine"))
        resolved = self._resolve(batch, views)
        missing = pc.is_null(resolved)
        well_formed = pa.array(maps.match_any(resolved, TENANT_ID_RE2))
        invalid = pc.and_(pc.invert(missing), pc.invert(well_formed))
        if self.catalog:
            unknown = pc.and_(well_formed, pc.invert(pc.is_in(resolved, value_set=self._catalog_ids)))
        else:
            unknown = pa.array(np.zeros(batch.num_rows, dtype=bool))
        accepted = pc.and_(well_formed, pc.invert(unknown))

        # every row gets a reason it failed (or null); which ones are quarantined depends on policy
        reason = pc.if_else(
            invalid,
            str(schemas.Reason.INVALID_TENANT_ID),
            pc.if_else(missing, str(schemas.Reason.MISSING_TENANT), pc.if_else(unknown, str(schemas.Reason.UNKNOWN_TENANT), None)),
        )
        if self.options.policy == "quarantine":
            rejected = pc.invert(accepted)
        else:
            rejected = invalid
        tenant = pc.if_else(accepted, resolved, schemas.UNATTRIBUTED)

        stats: Counter = Counter()
        out = _set_column(batch, "tenant_id", tenant)
        if "tenant_tier" in out.column_names:
            out = _set_column(out, "tenant_tier", self._tier(out, accepted, views))

        keep = pc.invert(rejected)
        kept = out if pc.all(keep).as_py() else out.filter(keep)
        quarantined = schemas.empty("quarantine")
        if kept.num_rows < batch.num_rows:
            bad = batch.filter(rejected)
            bad_reason = reason.filter(rejected)
            quarantined = base.quarantine_rows(table, bad, bad_reason, self.name, "tenant id rejected; see raw")
            quarantined = _set_column(
                quarantined, "tenant_id", pa.array([schemas.UNATTRIBUTED] * quarantined.num_rows, pa.string())
            )
            for r, n in _value_counts(bad_reason):
                stats[(schemas.UNATTRIBUTED, self.name, f"{base.QUARANTINED}:{r}")] += n
        moved = pc.and_(keep, pc.invert(accepted))
        for r, n in _value_counts(reason.filter(moved)):
            stats[(schemas.UNATTRIBUTED, self.name, f"{base.UNATTRIBUTED_OUTCOME}:{r}")] += n
        stats.update(base.count_by_tenant(kept, self.name, base.KEPT, views))
        return Result(kept, quarantined, stats)

    def _tier(self, batch: pa.Table, accepted: pa.Array, views: maps.BatchViews | None = None) -> pa.Array:
        tenant = batch.column("tenant_id")
        if self.catalog:
            idx = pc.index_in(tenant, value_set=self._catalog_ids)
            tier = pc.take(self._catalog_tiers, idx)
        else:
            tier = batch.column("tenant_tier")
            if "attributes" in batch.column_names:
                attrs = maps.entries_of(batch.column("attributes"), views)
                tier = pc.coalesce(tier, attrs.lookup(self.options.tier_key))
            ok = pa.array(maps.match_any(tier, _TIER_RE))
            tier = pc.if_else(ok, tier, pa.scalar(None, pa.string()))
        return pc.if_else(accepted, tier, pa.scalar(None, pa.string()))


def _map_through(values, keys: pa.Array, mapped: pa.Array) -> pa.Array:
    """``mapped[keys.index(v)]`` for each value, null where absent (vectorized)."""
    return pc.take(mapped, pc.index_in(values, value_set=keys))


def _set_column(t: pa.Table, name: str, values) -> pa.Table:
    i = t.schema.get_field_index(name)
    return t.set_column(i, t.schema.field(i), values)


def _value_counts(arr) -> list[tuple[str, int]]:
    if len(arr) == 0:
        return []
    vc = pc.value_counts(arr)
    return [(v["values"], v["counts"]) for v in vc.to_pylist() if v["values"] is not None]
