"""Wheel build hook: compile the optional C accelerator (see build_ext.py) into the wheel.

A wheel with it is platform-specific; without a compiler the wheel stays pure Python and
tenantry uses its numpy decoder.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class CustomBuildHook(BuildHookInterface):
    def initialize(self, version, build_data):
        if self.target_name != "wheel" or version == "editable":
            return
        sys.path.insert(0, self.root)
        try:
            import build_ext
        finally:
            sys.path.pop(0)
        self._tmp = tempfile.TemporaryDirectory(prefix="tenantry-ext-")
        built = build_ext.build(Path(self.root), Path(self._tmp.name))
        for rel, path in built:
            build_data["force_include"][str(path)] = rel
        if built:
            build_data["pure_python"] = False
            build_data["infer_tag"] = True

    def finalize(self, version, build_data, artifact_path):
        tmp = getattr(self, "_tmp", None)
        if tmp is not None:
            tmp.cleanup()
