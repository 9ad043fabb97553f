"""Tenant-aware processors over Arrow batches of the normalized tables (see ``base`` and README.md)."""

from collector_processors.base import Chain, Processor, ProcessorConfigError, Result
from collector_processors.registry import build_chain, describe_chain

__all__ = ["Chain", "Processor", "ProcessorConfigError", "Result", "build_chain", "describe_chain"]
