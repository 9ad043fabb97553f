"""tenantry: tenant-aware observability and metering.

Apps import this package to put tenant context on every span, log, metric and usage event.
"""

__version__ = "0.1.0"
