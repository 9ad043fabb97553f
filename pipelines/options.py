"""Beam pipeline options for tenantry's runs.

The embedded default is Beam's in-process ``FnApiRunner``, selected explicitly: the default
DirectRunner first tries to download the Prism runner from the internet. Any standard Beam option
(``--runner=DataflowRunner --project=...``, ``--runner=FlinkRunner --flink_master=...``,
``--runner=PortableRunner --job_endpoint=...``) passed through ``beam_args`` replaces it.
"""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

DEFAULT_RUNNER = "FnApiRunner"


def make_options(beam_args: list[str] | None = None, streaming: bool = False) -> tuple[object, PipelineOptions]:
    """(runner, options) for a run. ``runner`` is an instance for the in-process default, else the
    name given with ``--runner``."""
    args = list(beam_args or [])
    if streaming:
        args.append("--streaming")
    opts = PipelineOptions(args)
    runner_name = opts.get_all_options().get("runner") or DEFAULT_RUNNER
    if runner_name in ("FnApiRunner", "fnapirunner", "InProcess"):
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        return FnApiRunner(), opts
    return runner_name, opts
