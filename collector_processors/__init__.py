"""Tenant-aware processors over Arrow batches of the normalized tables (see ``base``)."""

from collector_processors.base import Chain, Processor, ProcessorConfigError, Result

__all__ = ["Chain", "Processor", "ProcessorConfigError", "Result"]
