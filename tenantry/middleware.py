"""ASGI and WSGI middleware: resolve each request's tenant and run the request inside it.

::

    app = TenantASGIMiddleware(app, resolver=ChainResolver([...]), required=True)
    wsgi_app = TenantWSGIMiddleware(wsgi_app)            # X-Tenant-ID header, optional

For every HTTP (and WebSocket) request the middleware asks the resolver (default:
``HeaderResolver(header)``) for the tenant and runs the app inside ``tenant_context`` for the
whole request, including an ASGI streaming response and every chunk of a WSGI response iterable.

- **Identity beats baggage.** A caller's W3C ``baggage`` can say anything, so the resolved
  tenant replaces any ``tenant.*`` baggage; when the baggage claimed a different tenant, the
  claim is recorded as span attribute ``tenant.baggage_id`` (on the current span and on spans
  started during the request), a security signal.
- **No tenant** (nothing resolved): ``on_missing(headers)`` is called if given (a hook for
  counting or logging; its errors are logged), then by default the request passes through with
  no tenant context (forged baggage tenant keys removed), so its telemetry arrives
  ``__unattributed__``; with ``required=True`` it is answered ``401`` with a JSON error.
- **Bad tenant** (not a well-formed tenant id per ``TENANT_ID_RE``, e.g. unicode or quotes;
  too long; control characters; two different headers): ``400`` JSON error, even when
  ``required=False`` -- a malformed id is refused, never passed through or dropped.
  A refused credential (bad JWT, unknown API key) answers the resolver's status, ``401``.
  Nothing here raises into the server.
- A resolver that crashes is logged and treated as "no tenant" (so ``required=True`` fails closed).

WebSocket requests that are refused are closed before accept with code 1008 (policy violation).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping

from opentelemetry import context as otel_context
from opentelemetry import trace

from tenantry.context import (
    BAGGAGE_ID_ATTRIBUTE,
    BAGGAGE_MISMATCH_KEY,
    TenantContextError,
    current_tenant,
    with_tenant,
    without_tenant,
)
from tenantry.resolvers import (
    HeaderResolver,
    RequestHeaders,
    TenantResolutionError,
    TenantResolver,
    baggage_tenant,
    header_values,
)

logger = logging.getLogger(__name__)

__all__ = ["TenantASGIMiddleware", "TenantWSGIMiddleware"]

_REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden"}


@dataclass(frozen=True)
class _Decision:
    context: otel_context.Context | None = None
    status: int = 200
    error: str = ""
    message: str = ""

    def body(self) -> bytes:
        return json.dumps({"error": self.error, "message": self.message}).encode("utf-8")


class _TenantMiddleware:
    def __init__(
        self,
        app: Any,
        resolver: TenantResolver | None = None,
        header: str = "X-Tenant-ID",
        required: bool = False,
        on_missing: Callable[[Mapping[str, str]], None] | None = None,
    ) -> None:
        self.app = app
        self.resolver = resolver if resolver is not None else HeaderResolver(header)
        self.required = required
        self.on_missing = on_missing

    def _decide(self, headers: RequestHeaders, host: str | None) -> _Decision:
        try:
            info = self.resolver.resolve(headers, host)
        except TenantContextError as exc:
            return _Decision(status=400, error="invalid_tenant", message=str(exc))
        except TenantResolutionError as exc:
            error = "invalid_tenant" if exc.status_code == 400 else "unauthenticated"
            return _Decision(status=exc.status_code, error=error, message=str(exc))
        except Exception:  # noqa: BLE001 - a broken resolver must not break the server
            logger.exception("tenantry: tenant resolver %r failed; treating the request as without tenant",
                             type(self.resolver).__name__)
            info = None

        claimed = _claimed_tenant(headers)
        if info is None:
            self._notify_missing(headers)
            if self.required:
                return _Decision(status=401, error="tenant_required",
                                 message="this endpoint needs a tenant; none could be resolved from the request")
            ctx = without_tenant()
        else:
            ctx = with_tenant(info)
        if claimed is not None and (info is None or claimed != info.tenant_id):
            ctx = otel_context.set_value(BAGGAGE_MISMATCH_KEY, claimed, ctx)
            span = trace.get_current_span()
            if span.is_recording():
                span.set_attribute(BAGGAGE_ID_ATTRIBUTE, claimed)
        return _Decision(context=ctx)

    def _notify_missing(self, headers: Mapping[str, str]) -> None:
        if self.on_missing is None:
            return
        try:
            self.on_missing(headers)
        except Exception:  # noqa: BLE001
            logger.exception("tenantry: on_missing hook failed")


def _claimed_tenant(headers: Mapping[str, str]) -> str | None:
    """The tenant id the caller's baggage claims: the raw header, or what an outer OpenTelemetry
    middleware already extracted into the current context."""
    info = baggage_tenant(headers) or current_tenant()
    return info.tenant_id if info is not None else None


class TenantASGIMiddleware(_TenantMiddleware):
    """ASGI middleware: the request (and its streaming response) runs in the tenant's context."""

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope.get("type") not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = RequestHeaders.from_asgi(scope.get("headers") or ())
        hosts = header_values(headers, "host")
        decision = self._decide(headers, hosts[0] if hosts else None)
        if decision.context is None:
            await _asgi_refuse(scope, send, decision)
            return
        token = otel_context.attach(decision.context)
        try:
            await self.app(scope, receive, send)
        finally:
            otel_context.detach(token)


async def _asgi_refuse(scope: dict, send: Callable, decision: _Decision) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": decision.error})
        return
    body = decision.body()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if decision.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": decision.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class TenantWSGIMiddleware(_TenantMiddleware):
    """WSGI middleware: the app call and every chunk of its response run in the tenant's context."""

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        headers = RequestHeaders.from_wsgi(environ)
        decision = self._decide(headers, environ.get("HTTP_HOST") or environ.get("SERVER_NAME"))
        if decision.context is None:
            body = decision.body()
            response_headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
            if decision.status == 401:
                response_headers.append(("WWW-Authenticate", "Bearer"))
            start_response(f"{decision.status} {_REASONS.get(decision.status, 'Error')}", response_headers)
            return [body]
        token = otel_context.attach(decision.context)
        try:
            result = self.app(environ, start_response)
        finally:
            otel_context.detach(token)
        return _InContext(result, decision.context)


class _InContext:
    """A WSGI response iterable whose iteration and ``close()`` run in ``ctx``.

    The context is attached per chunk, never held across a yield, so it cannot leak into the
    server's thread between chunks or into the next request.
    """

    def __init__(self, result: Iterable[bytes], ctx: otel_context.Context) -> None:
        self._result = result
        self._ctx = ctx
        self._iterator: Iterator[bytes] | None = None

    def __iter__(self) -> _InContext:
        return self

    def __next__(self) -> bytes:
        token = otel_context.attach(self._ctx)
        try:
            if self._iterator is None:
                self._iterator = iter(self._result)
            return next(self._iterator)
        finally:
            otel_context.detach(token)

    def close(self) -> None:
        close = getattr(self._result, "close", None)
        if close is None:
            return
        token = otel_context.attach(self._ctx)
        try:
            close()
        finally:
            otel_context.detach(token)
