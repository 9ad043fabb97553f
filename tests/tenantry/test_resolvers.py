"""Tenant resolvers: header, verified JWT claim, API key, subdomain, baggage, chain."""

from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tenantry import TenantContextError, TenantInfo
from tenantry.resolvers import (
    ApiKeyResolver,
    BaggageResolver,
    ChainResolver,
    HeaderResolver,
    JWTClaimResolver,
    RequestHeaders,
    SubdomainResolver,
    TenantResolutionError,
)

SECRET = "s3cret-key-for-tests-only-32-bytes!!"


# --- RequestHeaders --------------------------------------------------------------------------


def test_request_headers_are_case_insensitive_and_keep_repeated_fields():
    h = RequestHeaders([("X-Tenant-ID", "a"), ("x-tenant-id", "b"), ("Host", "h")])
    assert h["X-TENANT-ID"] == "a, b"
    assert h.get_all("x-tenant-id") == ["a", "b"]
    assert h.get("missing") is None
    assert set(h) == {"x-tenant-id", "host"}


def test_request_headers_decode_utf8_with_latin1_fallback_and_hide_values_in_repr():
    h = RequestHeaders.from_asgi([(b"x-tenant-id", "租户".encode()), (b"x-api-key", b"\xff\xfesecret")])
    assert h["x-tenant-id"] == "租户"
    assert h["x-api-key"] == "\xff\xfesecret"
    assert "secret" not in repr(h)


def test_request_headers_from_wsgi_environ_reread_utf8():
    environ = {"HTTP_X_TENANT_ID": "café".encode().decode("latin-1"), "CONTENT_TYPE": "text/plain",
               "PATH_INFO": "/"}
    h = RequestHeaders.from_wsgi(environ)
    assert h["x-tenant-id"] == "café"
    assert h["content-type"] == "text/plain"
    assert "path-info" not in h


# --- HeaderResolver --------------------------------------------------------------------------


def test_header_resolver_reads_the_header_case_insensitively():
    assert HeaderResolver().resolve({"x-tenant-id": " acme "}, None) == TenantInfo("acme")
    assert HeaderResolver("X-Org").resolve(RequestHeaders([("X-ORG", "globex")]), None) == TenantInfo("globex")


@pytest.mark.parametrize("headers", [{}, {"x-tenant-id": ""}, {"x-tenant-id": "   "}, {"other": "acme"}])
def test_header_resolver_returns_none_without_a_value(headers):
    assert HeaderResolver().resolve(headers, None) is None


def test_repeated_identical_headers_are_accepted_but_different_ones_are_refused_with_400():
    same = RequestHeaders([("X-Tenant-ID", "acme"), ("X-Tenant-ID", "acme")])
    assert HeaderResolver().resolve(same, None) == TenantInfo("acme")
    different = RequestHeaders([("X-Tenant-ID", "acme"), ("X-Tenant-ID", "globex")])
    with pytest.raises(TenantResolutionError) as err:
        HeaderResolver().resolve(different, None)
    assert err.value.status_code == 400


@pytest.mark.parametrize("value", ["x" * 100_000, "acme\x00", "a\x1bb", "ac\u202eme"])
def test_header_resolver_refuses_invalid_tenant_values(value):
    with pytest.raises(TenantContextError):
        HeaderResolver().resolve({"X-Tenant-ID": value}, None)


@pytest.mark.parametrize(
    "value", ["租户-1", "café", "acme' OR '1'='1", "Robert'); DROP TABLE tenants;--", "-acme", "acme/../globex"]
)
def test_header_resolver_refuses_unicode_and_sql_looking_ids_fail_closed(value):
    # tenant ids follow TENANT_ID_RE (the pipeline's rule): not well-formed is refused, never passed on
    with pytest.raises(TenantContextError, match="is not valid"):
        HeaderResolver().resolve({"X-Tenant-ID": value}, None)


def test_header_resolver_refusal_does_not_fall_through_a_chain():
    chain = ChainResolver([HeaderResolver(), ApiKeyResolver({"k": "victim"})])
    with pytest.raises(TenantContextError):
        chain.resolve({"X-Tenant-ID": "acme' OR '1'='1", "X-API-Key": "k"}, None)


@pytest.mark.parametrize("value", ["acme", "ACME-42", "acme.eu_west:prod@x-1", "0", "a" * 128])
def test_header_resolver_accepts_the_whole_tenant_id_alphabet_verbatim(value):
    assert HeaderResolver().resolve({"X-Tenant-ID": value}, None).tenant_id == value


# --- JWTClaimResolver ------------------------------------------------------------------------


def _token(claims=None, key=SECRET, algorithm="HS256", headers=None, **extra):
    payload = {"tenant_id": "acme", "sub": "user-1", "exp": int(time.time()) + 300, **(claims or {}), **extra}
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers)


def _bearer(token):
    return {"Authorization": f"Bearer {token}"}


def test_jwt_resolver_reads_tenant_tier_and_user_from_a_verified_token():
    resolver = JWTClaimResolver(SECRET, algorithms=["HS256"], tier_claim="plan", audience="api",
                                issuer="https://idp")
    token = _token({"plan": "pro", "aud": "api", "iss": "https://idp"})
    assert resolver.resolve(_bearer(token), None) == TenantInfo("acme", "pro", "user-1")


@pytest.mark.parametrize(
    "token",
    [
        _token(key="wrong-secret-wrong-secret-wrong-secret"),
        _token(exp=int(time.time()) - 10),
        _token({"nbf": int(time.time()) + 3600}),
        jwt.encode({"tenant_id": "acme", "exp": int(time.time()) + 300}, None, algorithm="none"),
        "not.a.jwt",
        "garbage",
    ],
    ids=["bad-signature", "expired", "not-yet-valid", "alg-none", "malformed", "garbage"],
)
def test_jwt_resolver_refuses_unverifiable_tokens_with_401_without_echoing_them(token):
    with pytest.raises(TenantResolutionError) as err:
        JWTClaimResolver(SECRET, algorithms=["HS256"]).resolve(_bearer(token), None)
    assert err.value.status_code == 401
    assert token not in str(err.value)


def test_jwt_resolver_requires_exp_audience_and_issuer_when_configured():
    no_exp = jwt.encode({"tenant_id": "acme"}, SECRET, algorithm="HS256")
    with pytest.raises(TenantResolutionError):
        JWTClaimResolver(SECRET, algorithms=["HS256"]).resolve(_bearer(no_exp), None)
    assert JWTClaimResolver(SECRET, algorithms=["HS256"], require_exp=False).resolve(_bearer(no_exp), None)
    with pytest.raises(TenantResolutionError):
        JWTClaimResolver(SECRET, algorithms=["HS256"], audience="api").resolve(_bearer(_token(aud="other")), None)
    with pytest.raises(TenantResolutionError):
        JWTClaimResolver(SECRET, algorithms=["HS256"], issuer="https://idp").resolve(
            _bearer(_token(iss="https://evil")), None)


def test_jwt_resolver_refuses_a_valid_token_without_the_tenant_claim():
    token = _token(tenant_id=None)
    with pytest.raises(TenantResolutionError, match="tenant_id"):
        JWTClaimResolver(SECRET, algorithms=["HS256"]).resolve(_bearer(token), None)


def test_jwt_resolver_refuses_a_verified_but_invalid_tenant_value():
    with pytest.raises(TenantContextError):
        JWTClaimResolver(SECRET, algorithms=["HS256"]).resolve(_bearer(_token(tenant_id="a\nb")), None)
    with pytest.raises(TenantContextError, match="is not valid"):
        JWTClaimResolver(SECRET, algorithms=["HS256"]).resolve(_bearer(_token(tenant_id="租户")), None)


def test_jwt_resolver_keeps_a_unicode_sql_looking_user_id_verbatim_next_to_a_well_formed_tenant():
    token = _token(sub="用户' OR '1'='1")
    info = JWTClaimResolver(SECRET, algorithms=["HS256"]).resolve(_bearer(token), None)
    assert info == TenantInfo("acme", None, "用户' OR '1'='1")


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Basic dXNlcjpwdw=="}, {"Authorization": ""}])
def test_jwt_resolver_ignores_requests_without_a_bearer_token(headers):
    assert JWTClaimResolver(SECRET, algorithms=["HS256"]).resolve(headers, None) is None


def test_jwt_resolver_refuses_alg_none_and_ambiguous_keys_at_construction():
    with pytest.raises(ValueError, match="none"):
        JWTClaimResolver(SECRET, algorithms=["none"])
    with pytest.raises(ValueError):
        JWTClaimResolver(SECRET, algorithms=[])
    with pytest.raises(ValueError, match="exactly one"):
        JWTClaimResolver(algorithms=["HS256"])


def test_jwt_resolver_verifies_rs256_tokens_against_a_jwks_by_kid():
    good, other = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2))
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(good.public_key(), as_dict=True)
    jwks = {"keys": [{**jwk, "kid": "k1", "alg": "RS256", "use": "sig"}]}
    resolver = JWTClaimResolver(jwks=jwks, algorithms=["RS256"])
    token = _token(key=good, algorithm="RS256", headers={"kid": "k1"})
    assert resolver.resolve(_bearer(token), None).tenant_id == "acme"
    forged = _token(key=other, algorithm="RS256", headers={"kid": "k1"})
    unknown_kid = _token(key=good, algorithm="RS256", headers={"kid": "k2"})
    wrong_alg = _token(algorithm="HS256", headers={"kid": "k1"})  # algorithm not in the allow-list
    for bad in (forged, unknown_kid, wrong_alg):
        with pytest.raises(TenantResolutionError):
            resolver.resolve(_bearer(bad), None)


# --- ApiKeyResolver --------------------------------------------------------------------------


def test_api_key_resolver_maps_known_keys_and_refuses_unknown_ones_without_revealing_them(caplog):
    resolver = ApiKeyResolver({"key-abc": "acme", "key-def": TenantInfo("globex", tier="pro")})
    assert resolver.resolve({"X-API-Key": "key-abc"}, None) == TenantInfo("acme")
    assert resolver.resolve({"x-api-key": "key-def"}, None) == TenantInfo("globex", "pro")
    assert resolver.resolve({}, None) is None
    with pytest.raises(TenantResolutionError) as err:
        resolver.resolve({"X-API-Key": "guess-123"}, None)
    assert err.value.status_code == 401
    assert "guess-123" not in str(err.value)
    assert "key-abc" not in repr(resolver)
    assert "guess-123" not in caplog.text


def test_api_key_resolver_refuses_invalid_tenant_ids_in_its_mapping_at_construction():
    with pytest.raises(TenantContextError):
        ApiKeyResolver({"k": "bad\x00tenant"})


# --- SubdomainResolver -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "tenant"),
    [
        ("acme.example.com", "acme"),
        ("ACME.Example.COM:8443", "acme"),
        ("acme.example.com.", "acme"),
        ("a-1.example.com", "a-1"),
        ("example.com", None),
        ("www.example.com", None),
        ("a.b.example.com", None),
        ("acme.example.com.evil.net", None),
        ("acmeexample.com", None),
        ("acme.other.com", None),
        ("-bad.example.com", None),
        ("ac'me.example.com", None),
        ("租户.example.com", None),
        ("[::1]:8080", None),
        ("", None),
        (None, None),
        ("x" * 10_000 + ".example.com", None),
    ],
)
def test_subdomain_resolver_takes_exactly_one_valid_label_under_the_base_domain(host, tenant):
    info = SubdomainResolver("example.com").resolve({}, host)
    assert (info.tenant_id if info else None) == tenant


def test_subdomain_resolver_needs_a_base_domain():
    with pytest.raises(ValueError):
        SubdomainResolver("  ")


# --- BaggageResolver and ChainResolver -------------------------------------------------------


def test_baggage_resolver_reads_the_w3c_baggage_header_and_ignores_bad_values():
    resolver = BaggageResolver()
    assert resolver.resolve({"baggage": "tenant.id=acme,tenant.tier=pro"}, None) == TenantInfo("acme", "pro")
    assert resolver.resolve({"baggage": "tenant.id=acme.eu%3Aprod%40x"}, None) == TenantInfo("acme.eu:prod@x")
    # not well-formed tenant ids resolve to None (the caller's baggage is not the app's mistake) ...
    assert resolver.resolve({"baggage": "tenant.id=%E7%A7%9F%E6%88%B7"}, None) is None
    assert resolver.resolve({"baggage": "tenant.id=acme%27%20OR%20%271%27%3D%271"}, None) is None
    # ... while unicode / SQL-looking user ids are still kept verbatim next to a well-formed tenant
    bag = "tenant.id=acme,user.id=%E7%94%A8%E6%88%B7%27%20OR%20%271%27%3D%271"
    assert resolver.resolve({"baggage": bag}, None) == TenantInfo("acme", None, "用户' OR '1'='1")
    assert resolver.resolve({"baggage": "tenant.id=a%00b"}, None) is None
    assert resolver.resolve({"baggage": "tenant.id=" + "a" * 9000}, None) is None
    assert resolver.resolve({}, None) is None


def test_chain_resolver_returns_the_first_tenant_found():
    chain = ChainResolver([ApiKeyResolver({"k": "from-key"}), HeaderResolver()])
    assert chain.resolve({"X-Tenant-ID": "from-header"}, None).tenant_id == "from-header"
    assert chain.resolve({"X-API-Key": "k", "X-Tenant-ID": "from-header"}, None).tenant_id == "from-key"
    assert chain.resolve({}, None) is None


def test_chain_resolver_fails_closed_a_bad_credential_does_not_fall_through():
    chain = ChainResolver([JWTClaimResolver(SECRET, algorithms=["HS256"]), HeaderResolver()])
    forged = {"Authorization": "Bearer " + _token(key="x" * 40), "X-Tenant-ID": "victim"}
    with pytest.raises(TenantResolutionError):
        chain.resolve(forged, None)
    with pytest.raises(ValueError):
        ChainResolver([])
