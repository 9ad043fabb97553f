"""Dashboards for every role and for each tenant, from the definitions in ``dashboards/``.

- :mod:`.model`  the YAML model and static checks (marts only, declared parameters only)
- :mod:`.query`  picker values, read-only connections, running a panel
- :mod:`.render` panels and pages as HTML (escaped, CSP, plotly embedded)
- :mod:`.build`  ``tenantry dashboard build``: self-contained HTML files
- :mod:`.check`  ``tenantry dashboard check``: every definition against a warehouse
- :mod:`.serve`  ``tenantry dashboard serve``: the same dashboards live, with pickers
- :mod:`.cli`    the click commands
"""

from tenantry.dashboards.build import build
from tenantry.dashboards.model import Dashboard, DashboardError, Panel, load_definitions
from tenantry.dashboards.query import PERIODS, RANGES, Selection, SelectionError

__all__ = ["build", "Dashboard", "DashboardError", "Panel", "load_definitions", "PERIODS", "RANGES",
           "Selection", "SelectionError"]
