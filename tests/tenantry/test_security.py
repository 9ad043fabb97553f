"""security: settings, the anomaly constants the view mirrors, and the demo's planted spans."""

from __future__ import annotations

import re

import pytest

from tenantry import config, resources, security


def test_defaults_follow_otel_semantic_conventions():
    st = security.settings(config.parse({}))
    assert st.status_code_attributes[0] == "http.response.status_code"
    assert st.resource_owner_attribute == "tenant.resource_owner" and st.baggage_attribute == "tenant.baggage_id"


def test_unknown_key_is_a_located_error():
    with pytest.raises(security.SecurityConfigError, match=r"tenantry.yaml: security.resource_owner: unknown key"):
        security.settings(config.parse({"security": {"resource_owner": "x"}}))


@pytest.mark.parametrize("bad, where", [
    ({"auth_failure_status_codes": [99999]}, "auth_failure_status_codes"),
    ({"status_code_attributes": []}, "status_code_attributes"),
    ({"baggage_attribute": "  "}, "baggage_attribute"),
    ({"rate_limited_status_codes": "many"}, "rate_limited_status_codes"),
])
def test_bad_values_name_their_key(bad, where):
    with pytest.raises(security.SecurityConfigError, match=rf"security\.{where}"):
        security.settings(bad)


def test_not_a_mapping():
    with pytest.raises(security.SecurityConfigError, match="expected a mapping"):
        security.settings(["x"])


def test_view_thresholds_match_the_documented_constants():
    sql = dict(resources.sql_files())["marts/security_findings"]
    assert f"interval {security.BASELINE_HOURS} hours preceding" in sql
    assert f"baseline_hours >= {security.MIN_BASELINE_HOURS} and events >= {security.ANOMALY_MIN_COUNT}" in sql
    assert f"a.score >= {security.ANOMALY_SCORE:g}" in sql


def test_demo_planted_spans_carry_one_of_each_finding():
    spans = security.demo_planted_spans(1_800_000_000 * 10**9, burst=30)
    def attrs(s):
        return {a["key"]: a["value"]["stringValue"] for a in s["attributes"]}
    assert sum(attrs(s).get("tenant.resource_owner") == "globex" for s in spans) == 1
    assert sum(attrs(s).get("tenant.baggage_id") == "globex" for s in spans) == 1
    assert sum(attrs(s).get("http.response.status_code") == "401" for s in spans) == 30
    assert all(attrs(s)["tenant.id"] == "initech" and re.fullmatch("[0-9a-f]{32}", s["traceId"]) for s in spans)
