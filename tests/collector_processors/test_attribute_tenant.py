from collections import Counter

import pytest

from collector_processors.attribute_tenant import AttributeTenant
from collector_processors.base import ProcessorConfigError
from tenantry import schemas
from tenantry.config import Tenant

from conftest import HOSTILE, assert_accounted, make_batch

CATALOG = {"acme": Tenant(tier="pro", plan="pro"), "globex": Tenant(tier="free")}


def _attr_rows(table, tenant_value):
    """A row that carries ``tenant_value`` where this table carries tenant context."""
    if table == "usage_events":
        return {"tenant": tenant_value}
    return {"tenant": "", "attrs": {"tenant.id": tenant_value}}


def test_resolves_tenant_by_precedence(table):
    rows = [_attr_rows(table, "acme")]
    if table != "usage_events":
        # attribute beats resource beats the decoder's column
        rows.append({"tenant": "globex", "attrs": {"tenant.id": "acme"}, "resource_attributes": [("tenant.id", "initech")]})
        rows.append({"tenant": "globex", "resource_attributes": [("tenant.id", "initech")]})
    res = AttributeTenant().process(table, make_batch(table, rows))
    expected = ["acme"] if table == "usage_events" else ["acme", "acme", "initech"]
    assert res.kept.column("tenant_id").to_pylist() == expected


def test_service_map_and_api_key_map_are_fallbacks(table):
    p = AttributeTenant(options={"service_tenants": {"billing-worker": "acme"}, "api_keys": {"k_live_123456": "globex"}})
    rows = [{"tenant": "", "service_name": "billing-worker"}]
    if table != "usage_events":
        rows.append({"tenant": "", "attrs": {"tenant.api_key": "k_live_123456"}})
    res = p.process(table, make_batch(table, rows))
    assert res.kept.column("tenant_id").to_pylist() == ["acme", "globex"][: len(rows)]


@pytest.mark.parametrize("hostile", [h for h in HOSTILE if h])
def test_hostile_tenant_ids_are_quarantined_not_passed_on(table, hostile):
    res = AttributeTenant().process(table, make_batch(table, [_attr_rows(table, hostile), _attr_rows(table, "acme")]))
    assert res.kept.column("tenant_id").to_pylist() == ["acme"]
    q = res.quarantined.to_pylist()
    assert [r["reason"] for r in q] == ["invalid_tenant_id"]
    assert q[0]["tenant_id"] == schemas.UNATTRIBUTED  # the hostile string never becomes a tenant id
    assert q[0]["processor"] == "attribute_tenant"
    assert_accounted(res, 2)


def test_missing_tenant_kept_unattributed_by_default(table):
    res = AttributeTenant().process(table, make_batch(table, [{"tenant": ""}, {"tenant": schemas.UNATTRIBUTED}]))
    assert res.kept.column("tenant_id").to_pylist() == [schemas.UNATTRIBUTED] * 2
    assert res.stats[(schemas.UNATTRIBUTED, "attribute_tenant", "unattributed:missing_tenant")] == 2


def test_missing_tenant_quarantined_with_policy_quarantine(table):
    res = AttributeTenant(options={"policy": "quarantine"}).process(table, make_batch(table, [{"tenant": ""}]))
    assert res.kept.num_rows == 0
    assert res.quarantined.column("reason").to_pylist() == ["missing_tenant"]


@pytest.mark.parametrize("policy,kept,reason", [("unattributed", [schemas.UNATTRIBUTED], None), ("quarantine", [], "unknown_tenant")])
def test_unknown_tenant_is_never_accepted_with_a_catalog(table, policy, kept, reason):
    p = AttributeTenant(options={"policy": policy}, tenants=CATALOG)
    res = p.process(table, make_batch(table, [_attr_rows(table, "newco")]))
    assert res.kept.column("tenant_id").to_pylist() == kept
    assert res.quarantined.column("reason").to_pylist() == ([reason] if reason else [])


def test_without_catalog_every_well_formed_id_is_accepted(table):
    res = AttributeTenant().process(table, make_batch(table, [_attr_rows(table, "brand-new.tenant:1@eu")]))
    assert res.kept.column("tenant_id").to_pylist() == ["brand-new.tenant:1@eu"]


def test_tier_comes_from_catalog_not_from_the_app(table):
    if table == "usage_events":
        pytest.skip("usage_events has no tenant_tier column")
    rows = [{"tenant": "acme", "tier": "enterprise", "attrs": {"tenant.tier": "enterprise"}}]
    with_catalog = AttributeTenant(tenants=CATALOG).process(table, make_batch(table, rows))
    assert with_catalog.kept.column("tenant_tier").to_pylist() == ["pro"]
    without = AttributeTenant().process(table, make_batch(table, [{"tenant": "acme", "attrs": {"tenant.tier": "enterprise"}}]))
    assert without.kept.column("tenant_tier").to_pylist() == ["enterprise"]
    hostile = AttributeTenant().process(table, make_batch(table, [{"tenant": "acme", "attrs": {"tenant.tier": "<script>"}}]))
    assert hostile.kept.column("tenant_tier").to_pylist() == [None]


def test_counts_kept_and_quarantined_per_tenant(table):
    rows = [_attr_rows(table, "acme")] * 3 + [_attr_rows(table, "globex")] + [_attr_rows(table, "bad tenant")]
    res = AttributeTenant().process(table, make_batch(table, rows))
    assert res.stats == Counter({
        ("acme", "attribute_tenant", "kept"): 3,
        ("globex", "attribute_tenant", "kept"): 1,
        (schemas.UNATTRIBUTED, "attribute_tenant", "quarantined:invalid_tenant_id"): 1,
    })


def test_empty_batch_and_null_maps(table):
    p = AttributeTenant()
    assert p.process(table, make_batch(table, [])).kept.num_rows == 0
    res = p.process(table, make_batch(table, [{"tenant": "acme", "attrs": None}]))
    assert res.kept.column("tenant_id").to_pylist() == ["acme"]


@pytest.mark.parametrize("options,key", [
    ({"policy": "maybe"}, "policy: expected one of unattributed, quarantine; got 'maybe'"),
    ({"precedence": []}, "precedence"),
    ({"precedence": ["attribute", "header"]}, "precedence.1"),
    ({"service_tenants": {"svc": "bad id!"}}, "service_tenants"),
    ({"polcy": "quarantine"}, "polcy: unknown option"),
])
def test_bad_config_names_the_key(options, key):
    with pytest.raises(ProcessorConfigError, match=key.replace(".", r"\.").replace("(", r"\(")):
        AttributeTenant(options=options)


def test_service_map_tenant_must_be_in_catalog():
    with pytest.raises(ProcessorConfigError, match="service_tenants.svc: unknown tenant 'newco'"):
        AttributeTenant(options={"service_tenants": {"svc": "newco"}}, tenants=CATALOG)
