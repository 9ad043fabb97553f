"""Per-tenant cost allocation and margin: cloud cost in, cost per tenant and margin out.

- :func:`ingest` reads FOCUS 1.x, AWS CUR 2.0 and simple ``cost.csv`` files (local or S3),
  commits each file as one idempotent run and allocates it to tenants by the ``cost:`` rules;
- :func:`reallocate` allocates again after new telemetry or changed rules;
- the views ``tenant_cost_daily``, ``tenant_unit_cost``, ``tenant_margin_monthly`` and
  ``unallocated_cost`` (sql/marts) show the result; for every cost line the allocated and
  unallocated shares add up to its amount exactly.
"""

from tenantry.cost.ingest import IngestReport, ingest, reallocate
from tenantry.cost.readers import CostInputError
from tenantry.cost.rules import CostConfig, CostConfigError, parse_cost

__all__ = ["CostConfig", "CostConfigError", "CostInputError", "IngestReport", "ingest", "parse_cost", "reallocate"]
