"""ASGI and WSGI middleware: each request runs in its resolved tenant; bad or missing tenants are
answered, never raised."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from wsgiref.simple_server import WSGIRequestHandler, make_server
from wsgiref.util import setup_testing_defaults

import httpx
import pytest
from opentelemetry import baggage
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.responses import StreamingResponse
from starlette.routing import Route

from tenantry import current_tenant
from tenantry.middleware import TenantASGIMiddleware, TenantWSGIMiddleware
from tenantry.resolvers import ApiKeyResolver, HeaderResolver, SubdomainResolver, TenantResolver
from tenantry.schemas import TENANT_ID_KEY, TENANT_TIER_KEY
from tenantry.sdk import TenantSpanProcessor


@pytest.fixture
def tracing():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(TenantSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("test"), exporter
    provider.shutdown()


class Recorder:
    """A raw ASGI app that streams three chunks and records the tenant it sees at each step."""

    def __init__(self, tracer=None):
        self.seen = []
        self.tracer = tracer

    async def __call__(self, scope, receive, send):
        self.seen.append(current_tenant())
        if self.tracer:
            with self.tracer.start_as_current_span("handler"):
                pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(3):
            await asyncio.sleep(0)
            self.seen.append(current_tenant())
            await send({"type": "http.response.body", "body": b"chunk", "more_body": i < 2})


def call_asgi(app, headers=(), scope_type="http"):
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": scope_type, "method": "GET", "path": "/", "headers": list(headers),
             "query_string": b"", "server": ("127.0.0.1", 80)}
    asyncio.run(app(scope, receive, send))
    start = next((m for m in sent if m["type"] == "http.response.start"), None)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return (start["status"] if start else None), body, sent


def test_asgi_request_and_its_whole_streaming_response_run_in_the_tenant(tracing):
    tracer, exporter = tracing
    inner = Recorder(tracer)
    status, body, _ = call_asgi(TenantASGIMiddleware(inner), [(b"x-tenant-id", b"acme")])
    assert status == 200 and body == b"chunk" * 3
    assert [t.tenant_id for t in inner.seen] == ["acme"] * 4
    assert exporter.get_finished_spans()[0].attributes[TENANT_ID_KEY] == "acme"
    assert current_tenant() is None


def test_asgi_unicode_tenant_sent_as_utf8_bytes_is_decoded_then_refused_with_400():
    inner = Recorder()
    status, body, _ = call_asgi(TenantASGIMiddleware(inner), [(b"x-tenant-id", "租户-é".encode())])
    assert status == 400
    error = json.loads(body)
    assert error["error"] == "invalid_tenant"
    assert "'租户-é'" in error["message"]  # decoded as UTF-8, not latin-1 mojibake
    assert inner.seen == []  # fail closed: not passed through, not run without a tenant


@pytest.mark.parametrize(
    "raw",
    [b"acme' OR '1'='1", b"Robert'); DROP TABLE tenants;--", b"caf\xe9", b"-acme", b"acme/../globex"],
    ids=["sql-or", "sql-drop", "latin1", "leading-dash", "path"],
)
def test_asgi_tenant_ids_outside_the_tenant_id_rule_answer_400_even_when_optional(raw):
    inner = Recorder()
    status, body, _ = call_asgi(TenantASGIMiddleware(inner), [(b"x-tenant-id", raw)])
    assert status == 400
    assert json.loads(body)["error"] == "invalid_tenant"
    assert inner.seen == []


def test_asgi_tenant_id_using_the_whole_allowed_alphabet_is_resolved_verbatim():
    inner = Recorder()
    call_asgi(TenantASGIMiddleware(inner), [(b"x-tenant-id", b"acme.eu_west:prod@x-1")])
    assert inner.seen[0].tenant_id == "acme.eu_west:prod@x-1"


def test_asgi_missing_tenant_passes_through_without_context_and_calls_on_missing():
    missing = []
    inner = Recorder()
    status, _, _ = call_asgi(TenantASGIMiddleware(inner, on_missing=missing.append), [(b"host", b"h")])
    assert status == 200
    assert inner.seen == [None] * 4
    assert len(missing) == 1 and missing[0]["host"] == "h"


def test_asgi_required_tenant_missing_answers_401_json_and_never_calls_the_app():
    inner = Recorder()
    status, body, sent = call_asgi(TenantASGIMiddleware(inner, required=True))
    assert status == 401
    assert json.loads(body)["error"] == "tenant_required"
    assert (b"content-type", b"application/json") in sent[0]["headers"]
    assert inner.seen == []


@pytest.mark.parametrize(
    "headers",
    [
        [(b"x-tenant-id", b"a" * 129)],
        [(b"x-tenant-id", b"x" * 1_000_000)],
        [(b"x-tenant-id", b"acme\x01")],
        [(b"x-tenant-id", b"\xff\xfe\x85")],  # not UTF-8: latin-1 gives a C1 control (U+0085)
        [(b"x-tenant-id", "ac\u202eme".encode())],
        [(b"x-tenant-id", b"acme"), (b"X-Tenant-ID", b"globex")],
    ],
    ids=["too-long", "huge", "control", "bad-bytes", "bidi-override", "two-tenants"],
)
def test_asgi_invalid_tenant_answers_400_json_without_echoing_huge_values(headers):
    inner = Recorder()
    status, body, _ = call_asgi(TenantASGIMiddleware(inner, required=True), headers)
    assert status == 400
    assert json.loads(body)["error"] == "invalid_tenant"
    assert len(body) < 400
    assert inner.seen == []


def test_asgi_unknown_api_key_answers_401_without_revealing_the_key():
    app = TenantASGIMiddleware(Recorder(), resolver=ApiKeyResolver({"good": "acme"}))
    status, body, sent = call_asgi(app, [(b"x-api-key", b"stolen-guess")])
    assert status == 401
    assert json.loads(body)["error"] == "unauthenticated"
    assert b"stolen-guess" not in body
    assert (b"www-authenticate", b"Bearer") in sent[0]["headers"]


def test_asgi_header_wins_over_forged_baggage_and_the_claim_is_recorded(tracing):
    tracer, exporter = tracing
    inner = Recorder(tracer)
    headers = [(b"x-tenant-id", b"acme"), (b"baggage", b"tenant.id=victim,tenant.tier=enterprise")]
    call_asgi(TenantASGIMiddleware(inner), headers)
    assert inner.seen[0].tenant_id == "acme"
    assert inner.seen[0].tier is None  # the forged tier is dropped too
    attrs = exporter.get_finished_spans()[0].attributes
    assert attrs[TENANT_ID_KEY] == "acme"
    assert TENANT_TIER_KEY not in attrs
    assert attrs["tenant.baggage_id"] == "victim"


def test_asgi_matching_baggage_is_not_flagged(tracing):
    tracer, exporter = tracing
    call_asgi(TenantASGIMiddleware(Recorder(tracer)), [(b"x-tenant-id", b"acme"), (b"baggage", b"tenant.id=acme")])
    assert "tenant.baggage_id" not in exporter.get_finished_spans()[0].attributes


def test_asgi_baggage_alone_is_not_trusted_when_an_outer_otel_middleware_extracted_it(tracing):
    tracer, exporter = tracing
    inner = Recorder(tracer)
    app = TenantASGIMiddleware(inner)

    async def outer_instrumentation(scope, receive, send):
        # what opentelemetry-instrumentation-asgi does: extract baggage, open a server span
        token = otel_context.attach(baggage.set_baggage(TENANT_ID_KEY, "victim"))
        try:
            with tracer.start_as_current_span("server"):
                await app(scope, receive, send)
        finally:
            otel_context.detach(token)

    call_asgi(outer_instrumentation, [])
    assert inner.seen[0] is None
    spans = {s.name: dict(s.attributes) for s in exporter.get_finished_spans()}
    assert TENANT_ID_KEY not in spans["handler"]
    assert spans["handler"]["tenant.baggage_id"] == "victim"
    assert spans["server"]["tenant.baggage_id"] == "victim"  # set on the request's own span too


def test_asgi_crashing_resolver_is_logged_and_fails_closed_when_required(caplog):
    class Broken(TenantResolver):
        def resolve(self, headers, host):
            raise RuntimeError("bug")

    status, _, _ = call_asgi(TenantASGIMiddleware(Recorder(), resolver=Broken(), required=True))
    assert status == 401
    assert "bug" in caplog.text
    inner = Recorder()
    status, _, _ = call_asgi(TenantASGIMiddleware(inner, resolver=Broken()))
    assert status == 200 and inner.seen[0] is None


def test_asgi_subdomain_resolver_uses_the_host_header():
    inner = Recorder()
    call_asgi(TenantASGIMiddleware(inner, resolver=SubdomainResolver("example.com")),
              [(b"host", b"acme.example.com:443")])
    assert inner.seen[0].tenant_id == "acme"


def test_asgi_lifespan_passes_through_and_refused_websocket_closes_with_1008():
    seen = []

    async def app(scope, receive, send):
        seen.append(scope["type"])

    call_asgi(TenantASGIMiddleware(app, required=True), scope_type="lifespan")
    assert seen == ["lifespan"]
    _, _, sent = call_asgi(TenantASGIMiddleware(app, required=True), scope_type="websocket")
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "tenant_required"}]


def test_starlette_app_streaming_response_sees_the_tenant_in_every_chunk():
    async def stream(request):
        async def chunks():
            for _ in range(3):
                await asyncio.sleep(0)
                tenant = current_tenant()
                yield (tenant.tenant_id if tenant else "-") + "\n"

        return StreamingResponse(chunks(), media_type="text/plain")

    app = TenantASGIMiddleware(Starlette(routes=[Route("/", stream)]), required=True)

    async def requests():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return (await client.get("/", headers={"X-Tenant-ID": "acme"}), await client.get("/"),
                    await client.get("/", headers={"X-Tenant-ID": "a" * 500}))

    ok, missing, bad = asyncio.run(requests())
    assert ok.status_code == 200 and ok.text == "acme\nacme\nacme\n"
    assert missing.status_code == 401 and missing.json()["error"] == "tenant_required"
    assert bad.status_code == 400


# --- WSGI -----------------------------------------------------------------------------------


class WSGIRecorder:
    def __init__(self):
        self.seen = []
        self.closed_in = "not closed"

    def __call__(self, environ, start_response):
        self.seen.append(current_tenant())
        start_response("200 OK", [("Content-Type", "text/plain")])
        return self._Body(self)

    class _Body:
        def __init__(self, rec):
            self.rec, self.i = rec, 0

        def __iter__(self):
            return self

        def __next__(self):
            if self.i == 3:
                raise StopIteration
            self.i += 1
            self.rec.seen.append(current_tenant())
            return b"chunk"

        def close(self):
            tenant = current_tenant()
            self.rec.closed_in = tenant.tenant_id if tenant else None


def call_wsgi(app, **headers):
    environ = {}
    setup_testing_defaults(environ)
    environ.update(headers)
    status = []
    result = app(environ, lambda s, h, exc_info=None: status.append((s, h)))
    try:
        body = b"".join(result)
    finally:
        getattr(result, "close", lambda: None)()
    return status[0][0], body


def test_wsgi_app_and_every_response_chunk_and_close_run_in_the_tenant_without_leaking():
    inner = WSGIRecorder()
    status, body = call_wsgi(TenantWSGIMiddleware(inner), HTTP_X_TENANT_ID="acme")
    assert status == "200 OK" and body == b"chunk" * 3
    assert [t.tenant_id for t in inner.seen] == ["acme"] * 4
    assert inner.closed_in == "acme"
    assert current_tenant() is None


def test_wsgi_missing_invalid_and_required_tenants():
    inner = WSGIRecorder()
    assert call_wsgi(TenantWSGIMiddleware(inner))[0] == "200 OK"
    assert inner.seen[0] is None
    status, body = call_wsgi(TenantWSGIMiddleware(WSGIRecorder(), required=True))
    assert status == "401 Unauthorized" and json.loads(body)["error"] == "tenant_required"
    status, body = call_wsgi(TenantWSGIMiddleware(WSGIRecorder()), HTTP_X_TENANT_ID="x" * 100_000)
    assert status == "400 Bad Request" and len(body) < 400
    for hostile in ("租户-1".encode().decode("latin-1"), "acme' OR '1'='1"):  # PEP 3333: latin-1 str
        inner = WSGIRecorder()
        status, body = call_wsgi(TenantWSGIMiddleware(inner), HTTP_X_TENANT_ID=hostile)
        assert status == "400 Bad Request" and json.loads(body)["error"] == "invalid_tenant"
        assert inner.seen == []


def test_wsgi_header_wins_over_forged_baggage(tracing):
    tracer, exporter = tracing

    def app(environ, start_response):
        with tracer.start_as_current_span("handler"):
            pass
        start_response("200 OK", [])
        return [b""]

    call_wsgi(TenantWSGIMiddleware(app, resolver=HeaderResolver("X-Org")),
              HTTP_X_ORG="acme", HTTP_BAGGAGE="tenant.id=victim")
    attrs = exporter.get_finished_spans()[0].attributes
    assert attrs[TENANT_ID_KEY] == "acme" and attrs["tenant.baggage_id"] == "victim"


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def test_wsgi_middleware_under_a_real_wsgiref_server():
    inner = WSGIRecorder()
    server = make_server("127.0.0.1", 0, TenantWSGIMiddleware(inner, required=True), handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        req = urllib.request.Request(url, headers={"X-Tenant-ID": "acme"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.read() == b"chunk" * 3
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(url, timeout=10)
        assert err.value.code == 401
    finally:
        server.shutdown()
        server.server_close()
    assert [t.tenant_id for t in inner.seen] == ["acme"] * 4
