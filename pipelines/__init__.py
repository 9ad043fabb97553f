"""Apache Beam pipelines: batch and streaming, built from the composites in ``transforms``."""
