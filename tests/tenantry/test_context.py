"""tenant_context / current_tenant / tenant_attributes: the tenant travels in OTel baggage."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest
from opentelemetry import baggage

import tenantry
from tenantry import TenantContextError, TenantInfo, current_tenant, tenant_attributes, tenant_context
from tenantry.schemas import TENANT_ID_KEY, TENANT_TIER_KEY, USER_ID_KEY


def test_tenant_context_puts_tenant_keys_into_baggage_and_removes_them_on_exit():
    assert current_tenant() is None
    with tenant_context("acme", tier="pro", user_id="u-1") as info:
        assert info == TenantInfo("acme", "pro", "u-1")
        assert baggage.get_baggage(TENANT_ID_KEY) == "acme"
        assert baggage.get_baggage(TENANT_TIER_KEY) == "pro"
        assert baggage.get_baggage(USER_ID_KEY) == "u-1"
        assert current_tenant() == TenantInfo("acme", "pro", "u-1")
    assert current_tenant() is None
    assert baggage.get_baggage(TENANT_ID_KEY) is None


def test_nesting_restores_the_outer_tenant_and_inner_does_not_inherit_outer_tier_or_user():
    with tenant_context("outer", tier="enterprise", user_id="u-out"):
        with tenant_context("inner"):
            assert current_tenant() == TenantInfo("inner")
        assert current_tenant() == TenantInfo("outer", "enterprise", "u-out")


def test_exception_inside_the_block_still_restores_the_context():
    with pytest.raises(RuntimeError):
        with tenant_context("acme"):
            raise RuntimeError("boom")
    assert current_tenant() is None


def test_same_context_manager_object_can_be_reentered():
    ctx = tenant_context("acme")
    with ctx:
        with ctx:
            assert current_tenant().tenant_id == "acme"
        assert current_tenant().tenant_id == "acme"
    assert current_tenant() is None


def test_decorator_on_sync_function_runs_each_call_in_the_tenant():
    @tenant_context("acme", tier="free")
    def work(x):
        return x, current_tenant()

    assert work(1) == (1, TenantInfo("acme", "free"))
    assert current_tenant() is None
    assert work.__name__ == "work"


def test_decorator_on_async_function_holds_the_tenant_across_awaits():
    @tenant_context("acme")
    async def work():
        await asyncio.sleep(0)
        return current_tenant()

    async def main():
        results = await asyncio.gather(*(work() for _ in range(5)))
        return results, current_tenant()

    results, after = asyncio.run(main())
    assert all(r == TenantInfo("acme") for r in results)
    assert after is None


def test_asyncio_tasks_created_inside_inherit_the_tenant_and_do_not_leak_between_tasks():
    async def handler(tenant):
        with tenant_context(tenant):
            await asyncio.sleep(0.001)
            inner = await asyncio.create_task(asyncio.sleep(0, result=current_tenant()))
            return tenant, inner.tenant_id

    async def main():
        return await asyncio.gather(*(handler(f"t{i}") for i in range(20)))

    for tenant, seen in asyncio.run(main()):
        assert seen == tenant


def test_threads_started_with_a_copied_context_inherit_the_tenant():
    seen = {}

    def record(name):
        seen[name] = current_tenant()

    async def via_to_thread():
        with tenant_context("acme"):
            await asyncio.to_thread(record, "to_thread")

    asyncio.run(via_to_thread())
    with tenant_context("globex"):
        ctx = contextvars.copy_context()
        t = threading.Thread(target=ctx.run, args=(record, "copied"))
        bare = threading.Thread(target=record, args=("bare",))
        t.start(), bare.start()
        t.join(), bare.join()
    assert seen["to_thread"].tenant_id == "acme"
    assert seen["copied"].tenant_id == "globex"
    # Python does not copy contextvars into a bare Thread: documented, not a tenantry choice.
    assert seen["bare"] is None


@pytest.mark.parametrize(
    "tenant_id",
    [
        "",
        "   ",
        None,
        42,
        b"acme",
        "a" * 129,
        "x" * 1_000_000,
        "acme\x00",
        "ac\nme",
        "acme\r\nX-Injected: 1",
        "\x1b[31mred",
        "ac\u202eme",  # right-to-left override
        "ac\u200bme",  # zero-width space
        "acme\u2028",  # line separator
        " acme",
        "acme ",
    ],
)
def test_invalid_tenant_ids_raise_tenant_context_error(tenant_id):
    with pytest.raises(TenantContextError) as err:
        tenant_context(tenant_id)
    assert isinstance(err.value, ValueError)
    assert len(str(err.value)) < 300  # a huge value is not echoed back
    assert current_tenant() is None


def test_invalid_tier_or_user_id_raise_tenant_context_error():
    with pytest.raises(TenantContextError, match="tenant tier"):
        tenant_context("acme", tier="pro\n")
    with pytest.raises(TenantContextError, match="user id"):
        tenant_context("acme", user_id="u" * 200)


@pytest.mark.parametrize("tenant_id", ["a" * 128, "org.team:1@x", "Acme-2_b"])
def test_well_formed_tenant_ids_are_kept_verbatim(tenant_id):
    with tenant_context(tenant_id):
        assert current_tenant().tenant_id == tenant_id
        assert baggage.get_baggage(TENANT_ID_KEY) == tenant_id


@pytest.mark.parametrize(
    "tenant_id",
    ["租户-42", "café", "acme'; DROP TABLE tenants;--", "a" * 129, "🦄-tenant", "org/team", "<script>", "-lead"],
)
def test_ids_the_pipeline_would_quarantine_are_refused_in_the_app(tenant_id):
    # the app sees the error at once instead of its telemetry being quarantined downstream
    with pytest.raises(TenantContextError, match="not valid|at most"):
        tenant_context(tenant_id)


def test_tenant_attributes_for_metrics_leave_out_user_unless_asked():
    assert tenant_attributes() == {}
    with tenant_context("acme", tier="pro", user_id="u-1"):
        assert tenant_attributes() == {TENANT_ID_KEY: "acme", TENANT_TIER_KEY: "pro"}
        assert tenant_attributes(include_user=True) == {
            TENANT_ID_KEY: "acme",
            TENANT_TIER_KEY: "pro",
            USER_ID_KEY: "u-1",
        }


def test_current_tenant_ignores_an_invalid_tenant_forged_into_baggage():
    from opentelemetry import context as otel_context

    token = otel_context.attach(baggage.set_baggage(TENANT_ID_KEY, "evil\x00" + "x" * 500))
    try:
        assert current_tenant() is None
        assert tenant_attributes() == {}
    finally:
        otel_context.detach(token)


def test_package_exports_the_public_api_without_importing_the_sdk_eagerly():
    import os
    import pathlib
    import subprocess
    import sys

    code = (
        "import sys, tenantry; "
        "heavy = [m for m in ('opentelemetry.sdk.trace', 'jwt', 'duckdb', 'apache_beam') if m in sys.modules]; "
        "print(heavy); assert tenantry.configure and tenantry.TenantSpanProcessor; "
        "print('opentelemetry.sdk.trace' in sys.modules)"
    )
    root = str(pathlib.Path(tenantry.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": root}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout.split("\n")
    assert out[0] == "[]"
    assert out[1] == "True"  # loaded on first access
    for name in ("configure", "tenant_context", "current_tenant", "tenant_attributes", "record_usage",
                 "TenantInfo", "TenantContextError", "UsageError", "TenantryProviders", "__version__"):
        assert hasattr(tenantry, name)
