"""The billing-ready usage ledger: append-only entries per (tenant, meter, period, dimensions).

See ``README.md`` in this folder for the guarantees in plain words. Public API:

- :func:`update_for_run` — the ledger step of a pipeline run (writes uncommitted parts);
- :class:`LedgerReport` — what a run did (events in, duplicates, quarantined, entries);
- :func:`settings` / :class:`LedgerSettings` — the validated ``ledger:`` config section.
"""

from tenantry.ledger.run import CRASH_ENV, LedgerReport, update_for_run
from tenantry.ledger.settings import LedgerSettings, parse_duration, settings

__all__ = ["CRASH_ENV", "LedgerReport", "LedgerSettings", "parse_duration", "settings", "update_for_run"]
