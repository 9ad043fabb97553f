"""Tenant resolution strategies: who is this request for?

A resolver looks at a request's headers (a case-insensitive ``Mapping[str, str]``) and host and
returns a :class:`~tenantry.context.TenantInfo`, or ``None`` when the request carries no
credential of its kind. A request that carries a credential which is *wrong* (bad signature,
expired token, unknown API key, two different tenant headers) raises
:class:`TenantResolutionError`; a credential that names an invalid tenant id raises
:class:`~tenantry.context.TenantContextError`. Both fail closed: :class:`ChainResolver` does not
fall through to the next resolver, so a bad token plus a forged header never resolves.

::

    resolver = ChainResolver([
        JWTClaimResolver(jwks="https://idp.example.com/.well-known/jwks.json",
                         algorithms=["RS256"], audience="api", issuer="https://idp.example.com/"),
        ApiKeyResolver({"key-abc": "acme"}),
        SubdomainResolver("example.com"),
    ])
"""

from __future__ import annotations

import abc
import re
from typing import Any, Iterable, Iterator, Mapping, Sequence

from tenantry.context import TenantInfo, tenant_from_baggage

__all__ = [
    "ApiKeyResolver",
    "BaggageResolver",
    "ChainResolver",
    "HeaderResolver",
    "JWTClaimResolver",
    "RequestHeaders",
    "SubdomainResolver",
    "TenantResolutionError",
    "TenantResolver",
]


class TenantResolutionError(ValueError):
    """The request carried a tenant credential that is not acceptable.

    ``status_code`` is the HTTP status a server should answer (400 malformed, 401 not
    authenticated). The message is safe to return to the caller: it never contains a key or token.
    """

    def __init__(self, message: str, status_code: int = 401) -> None:
        super().__init__(message)
        self.status_code = status_code


class RequestHeaders(Mapping[str, str]):
    """Case-insensitive request headers that remember repeated fields.

    ``headers[name]`` joins repeated fields with ``", "`` (RFC 9110); :meth:`get_all` returns them
    one by one, so a resolver can refuse a request that names two different tenants.
    """

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        self._fields: dict[str, list[str]] = {}
        for name, value in pairs:
            self._fields.setdefault(name.lower(), []).append(value)

    @classmethod
    def from_asgi(cls, raw: Iterable[tuple[bytes, bytes]]) -> RequestHeaders:
        """From ASGI ``scope["headers"]``; values are UTF-8, falling back to latin-1."""
        return cls((_decode(k), _decode(v)) for k, v in raw)

    @classmethod
    def from_wsgi(cls, environ: Mapping[str, Any]) -> RequestHeaders:
        """From a WSGI environ (PEP 3333 latin-1 strings, re-read as UTF-8 where valid)."""
        pairs = []
        for key, value in environ.items():
            if key.startswith("HTTP_"):
                name = key[5:].replace("_", "-")
            elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                name = key.replace("_", "-")
            else:
                continue
            if isinstance(value, str):
                pairs.append((name, _decode(value.encode("latin-1", "replace"))))
        return cls(pairs)

    def get_all(self, name: str) -> list[str]:
        return list(self._fields.get(name.lower(), ()))

    def __getitem__(self, name: str) -> str:
        return ", ".join(self._fields[name.lower()])

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:  # values may be secrets (API keys, tokens): names only
        return f"RequestHeaders({sorted(self._fields)})"


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def header_values(headers: Mapping[str, str], name: str) -> list[str]:
    """Every value of header ``name`` (case-insensitive), stripped of surrounding whitespace."""
    if isinstance(headers, RequestHeaders):
        values = headers.get_all(name)
    else:
        wanted = name.lower()
        values = [v for k, v in headers.items() if k.lower() == wanted]
    return [v.strip(" \t") for v in values]


def single_header(headers: Mapping[str, str], name: str) -> str | None:
    """The one value of header ``name``; ``None`` if absent or empty. Repeated, differing values
    raise :class:`TenantResolutionError` (400): the request is ambiguous."""
    values = {v for v in header_values(headers, name) if v}
    if not values:
        return None
    if len(values) > 1:
        raise TenantResolutionError(f"{name}: the request carries {len(values)} different values", 400)
    return values.pop()


class TenantResolver(abc.ABC):
    """Resolves the tenant of a request. Implementations must not log credentials."""

    @abc.abstractmethod
    def resolve(self, headers: Mapping[str, str], host: str | None) -> TenantInfo | None:
        """The request's tenant, ``None`` without a credential of this kind; raises
        :class:`TenantResolutionError` / ``TenantContextError`` for a bad one."""


class HeaderResolver(TenantResolver):
    """Tenant id from a header (default ``X-Tenant-ID``), e.g. set by a trusted gateway.

    Trust it only when a gateway in front sets or strips this header: callers can send anything.
    """

    def __init__(self, header: str = "X-Tenant-ID") -> None:
        self.header = header

    def resolve(self, headers: Mapping[str, str], host: str | None) -> TenantInfo | None:
        value = single_header(headers, self.header)
        return TenantInfo(value) if value is not None else None


class ApiKeyResolver(TenantResolver):
    """Tenant from an API key header via a key → tenant map (values: tenant id or TenantInfo).

    An unknown key is refused (401), never guessed. Keys never appear in messages or reprs.
    """

    def __init__(self, mapping: Mapping[str, str | TenantInfo], header: str = "X-API-Key") -> None:
        self._mapping = {k: v if isinstance(v, TenantInfo) else TenantInfo(v) for k, v in mapping.items()}
        self.header = header

    def resolve(self, headers: Mapping[str, str], host: str | None) -> TenantInfo | None:
        key = single_header(headers, self.header)
        if key is None:
            return None
        info = self._mapping.get(key)
        if info is None:
            raise TenantResolutionError(f"{self.header}: unknown API key", 401)
        return info

    def __repr__(self) -> str:
        return f"ApiKeyResolver(<{len(self._mapping)} keys>, header={self.header!r})"


_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


class SubdomainResolver(TenantResolver):
    """Tenant id from the first DNS label under ``base_domain``: ``acme.example.com`` → ``acme``.

    Only one valid DNS label is accepted (``a.b.example.com`` and the bare base resolve to
    ``None``); labels in ``exclude`` (default ``www``, ``api``) are not tenants. Trust the Host
    header only behind a proxy that routes by host name.
    """

    def __init__(self, base_domain: str, exclude: Sequence[str] = ("www", "api")) -> None:
        self.base_domain = base_domain.strip().strip(".").lower()
        if not self.base_domain:
            raise ValueError("SubdomainResolver: base_domain must not be empty, e.g. 'example.com'")
        self.exclude = frozenset(e.lower() for e in exclude)

    def resolve(self, headers: Mapping[str, str], host: str | None) -> TenantInfo | None:
        if not host:
            return None
        name = host.strip().lower()
        if name.startswith("["):  # IPv6 literal
            return None
        name = name.rsplit(":", 1)[0] if ":" in name else name
        name = name.rstrip(".")
        suffix = "." + self.base_domain
        if not name.endswith(suffix):
            return None
        label = name[: -len(suffix)]
        if not _LABEL.match(label) or label in self.exclude:
            return None
        return TenantInfo(label)


class JWTClaimResolver(TenantResolver):
    """Tenant from a claim of a *verified* bearer JWT (``Authorization: Bearer <token>``).

    Give ``key`` (a secret or public key) or ``jwks`` (a JWKS dict, or its URL, fetched and cached
    by PyJWT's ``PyJWKClient``). ``algorithms`` is required and may not include ``none``. The
    signature, ``exp`` (required unless ``require_exp=False``), ``nbf``, and ``aud``/``iss`` when
    given are verified; the token is never decoded unverified. A token that fails, or lacks the
    tenant claim, is refused with 401. ``tier_claim``/``user_claim`` fill tier and user id.
    """

    def __init__(
        self,
        key: Any = None,
        *,
        jwks: Mapping[str, Any] | str | None = None,
        algorithms: Sequence[str],
        claim: str = "tenant_id",
        audience: str | Sequence[str] | None = None,
        issuer: str | None = None,
        tier_claim: str | None = None,
        user_claim: str | None = "sub",
        header: str = "Authorization",
        require_exp: bool = True,
        leeway_s: float = 0,
    ) -> None:
        import jwt  # PyJWT; imported here to keep `import tenantry` cheap

        if (key is None) == (jwks is None):
            raise ValueError("JWTClaimResolver: give exactly one of key= or jwks=")
        if not algorithms or any(a.lower() == "none" for a in algorithms):
            raise ValueError("JWTClaimResolver: algorithms must list real algorithms, e.g. ['RS256']; 'none' is refused")
        self._jwt = jwt
        self._key = key
        self._jwk_set = jwt.PyJWKSet.from_dict(dict(jwks)) if isinstance(jwks, Mapping) else None
        self._jwk_client = jwt.PyJWKClient(jwks) if isinstance(jwks, str) else None
        self.algorithms = list(algorithms)
        self.claim, self.tier_claim, self.user_claim = claim, tier_claim, user_claim
        self.audience, self.issuer, self.header = audience, issuer, header
        self._options = {"require": ["exp"] if require_exp else [], "verify_aud": audience is not None}
        self._leeway = leeway_s

    def resolve(self, headers: Mapping[str, str], host: str | None) -> TenantInfo | None:
        value = single_header(headers, self.header)
        if value is None:
            return None
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer":
            return None  # Basic etc. are not ours
        token = token.strip()
        try:
            claims = self._jwt.decode(
                token,
                self._signing_key(token),
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                options=self._options,
                leeway=self._leeway,
            )
        except self._jwt.PyJWTError as exc:
            raise TenantResolutionError(f"bearer token rejected: {type(exc).__name__}", 401) from None
        return TenantInfo(
            _claim_text(claims, self.claim, required=True),  # type: ignore[arg-type]
            _claim_text(claims, self.tier_claim),
            _claim_text(claims, self.user_claim),
        )

    def _signing_key(self, token: str) -> Any:
        if self._key is not None:
            return self._key
        if self._jwk_client is not None:
            return self._jwk_client.get_signing_key_from_jwt(token).key
        kid = self._jwt.get_unverified_header(token).get("kid")  # only picks the key to verify with
        if kid is None:
            if len(self._jwk_set.keys) == 1:
                return self._jwk_set.keys[0].key
            raise self._jwt.InvalidTokenError("token has no kid and the JWKS holds several keys")
        try:
            return self._jwk_set[kid].key
        except KeyError:
            raise self._jwt.InvalidTokenError("no JWKS key matches the token's kid") from None

    def __repr__(self) -> str:
        return f"JWTClaimResolver(algorithms={self.algorithms!r}, claim={self.claim!r})"


def _claim_text(claims: Mapping[str, Any], name: str | None, required: bool = False) -> str | None:
    value = claims.get(name) if name else None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and value:
        return value
    if required:
        raise TenantResolutionError(f"bearer token has no usable {name!r} claim", 401)
    return None


_MAX_BAGGAGE_HEADER = 8192  # W3C baggage limit, as in W3CBaggagePropagator


class BaggageResolver(TenantResolver):
    """Tenant from the caller's W3C ``baggage`` header. Opt-in, for internal services only.

    Baggage is whatever the caller sent: use this only behind a gateway that verified the tenant
    and strips baggage from outside traffic. Invalid values resolve to ``None``.
    """

    def resolve(self, headers: Mapping[str, str], host: str | None) -> TenantInfo | None:
        return baggage_tenant(headers)


def baggage_tenant(headers: Mapping[str, str]) -> TenantInfo | None:
    """The tenant named in a W3C ``baggage`` header, or ``None`` (absent, invalid, oversized)."""
    from opentelemetry import baggage
    from opentelemetry.baggage.propagation import W3CBaggagePropagator
    from opentelemetry.context import Context

    values = header_values(headers, "baggage")
    if not values or len(values[0]) > _MAX_BAGGAGE_HEADER:
        return None  # (the propagator would log an oversized header verbatim)
    ctx = W3CBaggagePropagator().extract({"baggage": values[0]}, context=Context())
    return tenant_from_baggage(baggage.get_all(ctx))


class ChainResolver(TenantResolver):
    """The first resolver that returns a tenant wins; an error from any of them stops the chain."""

    def __init__(self, resolvers: Sequence[TenantResolver]) -> None:
        if not resolvers:
            raise ValueError("ChainResolver: give at least one resolver")
        self.resolvers = list(resolvers)

    def resolve(self, headers: Mapping[str, str], host: str | None) -> TenantInfo | None:
        for resolver in self.resolvers:
            info = resolver.resolve(headers, host)
            if info is not None:
                return info
        return None
