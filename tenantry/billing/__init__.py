"""Billing: plans, rating, invoice line drafts, exports to billing providers, reconciliation.

Flow: the usage ledger (``usage_ledger``) is rated with each tenant's plan into append-only
invoice lines (:mod:`tenantry.billing.invoice`), pushed exactly once to billing providers through
an outbox (:mod:`tenantry.billing.outbox`), and checked for revenue leakage
(:mod:`tenantry.billing.reconcile`).
"""


class BillingError(RuntimeError):
    """A billing run cannot go on; the message says what was wrong and what to do."""
