"""``tenantry demo``: the sample app, its configuration and the end-to-end run."""
