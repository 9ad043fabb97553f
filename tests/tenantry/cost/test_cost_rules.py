"""The cost: section: the docstring example parses; every mistake is located and explained."""

from __future__ import annotations

import re

import pytest
import yaml

from tenantry.cost import rules
from tenantry.cost.demo import DEMO_COST_YAML


def test_the_documented_example_and_the_demo_config_parse():
    example = rules.__doc__.split("Example (every option)::", 1)[1].split("\nMatching:", 1)[0]
    cfg = rules.parse_cost(yaml.safe_load(example)["cost"])
    assert [r.method for r in cfg.rules] == ["direct", "proportional", "fixed", "even", "shared"]
    assert cfg.s3.endpoint_url == "http://127.0.0.1:5000" and cfg.tag_keys == ["tenant", "user:tenant", "user_tenant"]
    assert rules.parse_cost(yaml.safe_load(DEMO_COST_YAML)["cost"]).rules


def test_empty_section_gives_defaults_with_no_rules():
    cfg = rules.from_config(None)
    assert cfg.rules == [] and cfg.currency == "USD" and str(cfg.allocation_unit) == "1E-9"


@pytest.mark.parametrize("data,located", [
    ({"rules": [{"name": "p", "method": "proportional"}]}, r"cost\.rules\.0: .*needs a driver"),
    ({"rules": [{"name": "p", "method": "proportional", "driver": "cpu"}]}, r"cost\.rules\.0\.driver: unknown driver 'cpu'"),
    ({"rules": [{"name": "f", "method": "fixed", "percentages": {"a": 50, "b": 40}}]}, r"add up to 90, not 100"),
    ({"rules": [{"name": "f", "method": "fixed", "percentages": {"x'; drop": 100}}]}, r"tenant id .* is not valid"),
    ({"rules": [{"name": "e", "method": "even", "tenants": []}]}, r"empty tenants list"),
    ({"rules": [{"name": "d", "method": "direct", "driver": "requests"}]}, r"only apply to method proportional"),
    ({"rules": [{"name": "a", "method": "direct"}, {"name": "a", "method": "shared"}]}, r"duplicate rule names: a"),
    ({"rules": [{"name": "a", "method": "split"}]}, r"cost\.rules\.0\.method"),
    ({"rule": []}, r"cost\.rule: unknown key"),
    ({"allocation_unit": "0"}, r"cost\.allocation_unit"),
    ({"allocation_unit": "abc"}, r"cost\.allocation_unit"),
    ({"currency": "dollars"}, r"ISO 4217"),
    ({"shared_policy": "burn"}, r"cost\.shared_policy"),
])
def test_mistakes_are_located_in_the_file(data, located):
    with pytest.raises(rules.CostConfigError) as e:
        rules.parse_cost(data, source="tenantry.yaml")
    assert str(e.value).startswith("tenantry.yaml: cost.")
    assert re.search(located, str(e.value)), str(e.value)


def test_not_a_mapping_is_refused():
    with pytest.raises(rules.CostConfigError, match="expected a mapping"):
        rules.parse_cost(["rules"])
