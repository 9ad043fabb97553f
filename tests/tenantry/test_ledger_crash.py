"""A run killed at any point of a ledger commit leaves the ledger exactly as before, and the next
run converges to the same ledger as a run that never crashed."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import time

import pyarrow.parquet as pq
import pytest

from tenantry.config import parse
from tenantry.ledger import CRASH_ENV
from tenantry.ledger.testing import UsageEvent, committed, ledger_run, usage_table
from tenantry.warehouse import Warehouse

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 10, 12, tzinfo=UTC)
CFG_DATA = {"meters": [{"name": "calls", "group_by": ["region"]}], "ledger": {"strict": True}}
CFG = parse(CFG_DATA)
FIRST = [UsageEvent(f"a{i}", "acme", "calls", "1.5", T0, (("region", "eu"),)) for i in range(10)]
# the crashing run: new events, duplicates of committed ones, late ones and a quarantined one
SECOND = (
    [UsageEvent(f"b{i}", t, "calls", "0.25", T0 - dt.timedelta(days=2)) for i in range(12) for t in ("acme", "globex")]
    + FIRST[:4] + [UsageEvent("q1", "acme", "undeclared", "1", T0)]
)

# what the batch driver does: discard an uncommitted run, write the run's usage, ledger, commit
DRIVER = textwrap.dedent("""
    import datetime as dt, sys, pyarrow.parquet as pq
    import tenantry.ledger.run as lr
    from tenantry.config import parse
    from tenantry.warehouse import Warehouse
    lr.INDEX_CHUNK_ROWS = 5  # several index parts, so a kill can land between them
    wh = Warehouse.open(sys.argv[1])
    wh.discard_uncommitted()
    wh.write_part("usage_events", "r2", "usage-0", pq.read_table(sys.argv[2]))
    lr.update_for_run(wh, "r2", parse(%r), dt.datetime.fromisoformat(sys.argv[3]))
    wh.commit("r2", ["in-r2"])
""" % (CFG_DATA,))


def state(wh: Warehouse) -> tuple:
    return (
        committed(wh, "usage_ledger", "select * exclude (computed_at) from t order by entry_id"),
        committed(wh, "usage_dedup", "select * from t order by tenant_id, event_id"),
        committed(wh, "quarantine", "select reason, raw from t order by raw"),
    )


def drive(wh_root, events_file, env=None, kill_after: float | None = None) -> int:
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(wh_root), str(events_file), T0.isoformat()],
                            env={**os.environ, **(env or {})}, stderr=subprocess.PIPE)
    if kill_after is not None:
        time.sleep(kill_after)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=120)
    return proc.returncode


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    ref = Warehouse.open(root / "wh")
    ledger_run(ref, "r1", FIRST, CFG, T0)
    ledger_run(ref, "r2", SECOND, CFG, T0)
    events_file = root / "second.parquet"
    pq.write_table(usage_table(SECOND, ingest_batch="in-r2"), events_file)
    return events_file, state(ref)


@pytest.fixture
def setup(tmp_path, reference):
    wh = Warehouse.open(tmp_path / "wh")
    ledger_run(wh, "r1", FIRST, CFG, T0)
    return wh, *reference


@pytest.mark.parametrize("point", ["after_read", "after_entries", "during_index", "after_quarantine"])
def test_crash_at_a_commit_point_leaves_the_ledger_as_before_and_rerun_converges(setup, point):
    wh, events_file, expected = setup
    before = state(wh)
    assert drive(wh.root, events_file, {CRASH_ENV: point}) == -signal.SIGKILL
    assert state(wh) == before  # nothing of the killed run is visible
    assert drive(wh.root, events_file) == 0
    assert state(wh) == expected


@pytest.mark.parametrize("delay", [0.8, 1.1])
def test_kill_at_an_arbitrary_moment_then_rerun_converges(setup, delay):
    wh, events_file, expected = setup
    before = state(wh)
    drive(wh.root, events_file, kill_after=delay)
    assert state(wh) in (before, expected)  # exactly as before or exactly as after
    assert drive(wh.root, events_file) == 0
    assert state(wh) == expected


def test_rerun_after_a_completed_run_adds_nothing(setup):
    wh, events_file, expected = setup
    assert drive(wh.root, events_file) == 0
    assert drive(wh.root, events_file) == 0  # same run id, recomputed identically
    assert state(wh) == expected
