"""Compile tenantry's optional C accelerator (the OTLP span decoder, ``tenantry/otlp/_fastspans.c``).

Used by the wheel build (``hatch_build.py``) and by ``make`` for the source tree the tests import
(``python build_ext.py --inplace``). Standard library only: it runs inside pip's isolated build
environment. Without a C compiler or Python headers it prints why and builds nothing: tenantry
then decodes with its numpy decoder (same results, about 3x slower on protobuf spans);
``tenantry.otlp.spans.accelerated()`` tells which one a process uses.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent
#: module path (relative, without suffix) -> C source
EXTENSIONS = {"tenantry/otlp/_fastspans": "tenantry/otlp/_fastspans.c"}


def build(root: Path, out_dir: Path) -> list[tuple[str, Path]]:
    """Compile every extension into ``out_dir`` (keeping its package path); returns
    ``(path inside the wheel, built file)`` for each one built."""
    cc = shlex.split(sysconfig.get_config_var("CC") or "cc")
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    include = sysconfig.get_paths()["include"]
    built = []
    for module, source in EXTENSIONS.items():
        target = out_dir / (module + suffix)
        target.parent.mkdir(parents=True, exist_ok=True)
        cmd = [*cc, "-O2", "-fPIC", "-shared", "-std=c99", "-Wall", f"-I{include}", str(root / source), "-o", str(target)]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as e:
            print(f"tenantry: not building {module} ({e}); the numpy decoder will be used", file=sys.stderr)
            continue
        if res.returncode != 0:
            print(f"tenantry: not building {module}; the numpy decoder will be used:\n{res.stderr[-2000:]}",
                  file=sys.stderr)
            continue
        built.append((module + suffix, target))
    return built


def main() -> None:
    ap = argparse.ArgumentParser(description="Compile tenantry's optional C accelerator.")
    ap.add_argument("--inplace", action="store_true", help="build next to the sources (for the tests)")
    ap.add_argument("--out", type=Path, help="build into this folder instead")
    args = ap.parse_args()
    if not args.inplace and not args.out:
        ap.error("give --inplace or --out DIR")
    built = build(ROOT, ROOT if args.inplace else args.out)
    for rel, _path in built:
        print(f"built {rel}")


if __name__ == "__main__":
    main()
