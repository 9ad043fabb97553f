import pytest

from collector_processors.base import Chain, ProcessorConfigError
from collector_processors.registry import DEFAULT_CHAIN, build_chain, describe_chain, known_types
from tenantry.config import parse

FULL = {
    "tenants": {"acme": {"tier": "pro"}},
    "processors": [
        {"attribute_tenant": {"policy": "quarantine"}},
        "validate",
        {"redact/strict": {"mode": "hash", "hash_key": "s" * 32}},
        {"limit_cardinality": {"max_values": 10}},
        {"sample": {"tiers": {"pro": 50}}},
    ],
}


def test_empty_list_gives_the_default_chain():
    chain = build_chain(parse({}))
    assert isinstance(chain, Chain)
    assert [p.describe()["type"] for p in chain] == ["attribute_tenant", "validate"]
    assert chain.processors[0].options.policy == "unattributed"
    assert len(DEFAULT_CHAIN) == 2


def test_builds_every_type_in_order_with_instance_names():
    chain = build_chain(parse(FULL))
    assert [p.name for p in chain] == ["attribute_tenant", "validate", "redact/strict", "limit_cardinality", "sample"]
    assert sorted(known_types()) == ["attribute_tenant", "limit_cardinality", "redact", "sample", "validate"]


def test_describe_chain_hides_secrets():
    desc = describe_chain(build_chain(parse(FULL)))
    assert desc[2] == {"name": "redact/strict", "type": "redact", "options": {"mode": "hash", "hash_key": "***"}}
    assert "s" * 32 not in repr(desc)


def test_catalog_reaches_attribute_tenant():
    chain = build_chain(parse(FULL))
    assert chain.processors[0].catalog.keys() == {"acme"}


@pytest.mark.parametrize("items,message", [
    (["nope"], r"processors\[0\]: unknown processor type 'nope'; known types: attribute_tenant, limit_cardinality, redact, sample, validate"),
    (["validate", {"redact/strict": {"mode": "blur"}}], r"processors\[1\] redact/strict: mode: expected one of mask, hash, drop; got 'blur'"),
    (["validate", "validate"], r"processors\[1\]: 'validate' appears twice"),
    ([{"validate": {}, "redact": {}}], r"processors\[0\]: expected 'type\[/name\]'"),
    ([42], r"processors\[0\]: expected"),
    (["redact/bad name!"], r"processors\[0\]: 'redact/bad name!' is not"),
    ([{"validate": [1, 2]}], r"processors\[0\] validate: expected a mapping of options"),
    ([{"attribute_tenant": {"service_tenants": {"svc": "globex"}}}], r"processors\[0\] attribute_tenant: service_tenants.svc: unknown tenant 'globex'"),
])
def test_bad_items_name_their_position(items, message):
    with pytest.raises(ProcessorConfigError, match=message):
        build_chain(parse({"tenants": {"acme": {}}, "processors": items}))


def test_two_named_instances_of_one_type():
    chain = build_chain(parse({"processors": ["redact/a", {"redact/b": {"mode": "drop"}}]}))
    assert [p.name for p in chain] == ["redact/a", "redact/b"]


def test_bare_type_with_null_options():
    chain = build_chain(parse({"processors": [{"validate": None}]}))
    assert chain.processors[0].options.max_attributes == 128
