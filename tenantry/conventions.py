"""Names and rules shared by the app-side library and the pipeline, with no heavy imports.

``import tenantry`` (in an app) must stay cheap, so these live apart from the Arrow schemas;
``tenantry.schemas`` and ``tenantry.config`` re-export them.
"""

import re

#: tenant_id for telemetry that arrived without (valid) tenant context. Counted, never dropped.
UNATTRIBUTED = "__unattributed__"

#: Attribute keys the tenantry library stamps on every span, log record and metric point.
TENANT_ID_KEY = "tenant.id"
TENANT_TIER_KEY = "tenant.tier"
USER_ID_KEY = "user.id"
#: Log event name of a usage event emitted by ``tenantry.record_usage``.
USAGE_EVENT_NAME = "tenantry.usage"
USAGE_ATTR_PREFIX = "tenantry.usage."
USAGE_EVENT_ID_KEY = "tenantry.usage.event_id"
USAGE_METER_KEY = "tenantry.usage.meter"
USAGE_QUANTITY_KEY = "tenantry.usage.quantity"
USAGE_UNIT_KEY = "tenantry.usage.unit"
USAGE_DIMENSION_PREFIX = "tenantry.usage.dim."

#: What a tenant id may look like, everywhere (library, processors, config, CLI): 1-128
#: characters of ASCII letters, digits and ``. _ : @ -``, starting with a letter or digit. Strict on
#: purpose: no look-alikes, no quotes, nothing a query or a page could misread.
TENANT_ID_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}\Z")
TENANT_ID_RULE = "1-128 ASCII letters, digits and . _ : @ -, starting with a letter or digit"
