"""pipelines.runtime: the allocator tuning every pipeline worker applies in its DoFns' setup."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import runtime

ROOT = Path(__file__).resolve().parents[2]

# what a worker does per batch: threads allocating and freeing blocks of one to seven MiB (numpy
# arrays, compression contexts); without the tuning glibc hands many back to the kernel (unmapped,
# or trimmed from the threads' heaps) and the next batch faults their pages in again
_FAULTS = """
import json, resource, threading
import numpy as np
from pipelines import runtime
state = runtime.tune_allocator()
def batches():
    for i in range(100):
        blocks = [np.ones((1 << 17) * (1 + i % 7)) for _ in range(3)]  # every page written
        del blocks
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
threads = [threading.Thread(target=batches) for _ in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps({"tuned": state, "again": runtime.tune_allocator(),
                  "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _child(env: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", _FAULTS], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT), **env}, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


glibc = pytest.mark.skipif(runtime._glibc() is None, reason="the tuning is for glibc's malloc")


@glibc
def test_freed_blocks_are_reused_instead_of_faulted_in_again():
    tuned = _child({"TENANTRY_MALLOC_TUNING": "1"})
    plain = _child({"TENANTRY_MALLOC_TUNING": "0"})
    assert tuned["tuned"] is True and tuned["again"] is True
    assert plain["tuned"] is False and plain["again"] is False
    # measured: ~170k page faults without the tuning, ~5k with it (the biggest blocks' pages, once)
    assert plain["faults"] > 10 * tuned["faults"], (plain, tuned)


@pytest.mark.parametrize("value", ["0", "false", "OFF", " no "])
def test_turned_off_by_the_environment(value):
    assert _child({"TENANTRY_MALLOC_TUNING": value})["tuned"] is False


def test_applied_once_per_process(monkeypatch):
    monkeypatch.setattr(runtime, "_state", None)
    calls = []
    monkeypatch.setattr(runtime, "_glibc", lambda: calls.append(1))  # as on a non-glibc system
    assert runtime.tune_allocator() is False
    assert runtime.tune_allocator() is False
    assert calls == [1]
