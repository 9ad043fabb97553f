"""The unbounded streaming pipeline (Beam continuous file matching): same figures as batch, each
segment exactly once across restarts and SIGKILLs, segments that land while it runs are picked up."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time

import pytest

from pipelines.batch import run_batch
from pipelines.unbounded import run_unbounded, segment_input, streaming_options
from tenantry import landing, querying
from tenantry.warehouse import Warehouse
from test_stream import figures, land


def _segment_ids(wh) -> list[str]:
    return [i for r in Warehouse(wh).committed_runs() for i in r.get("inputs", [])]


def test_segment_names_map_to_the_same_inputs_as_batch():
    assert segment_input("/l/seg-20261130T000000-abc.arrow").ingest_id == "seg:seg-20261130T000000-abc.arrow"
    assert segment_input("s3://b/l/nseg-x.arrow").kind == "normalized"
    assert segment_input("/l/.seg-x.arrow.tmp") is None and segment_input("/l/notes.txt") is None


def test_local_default_never_selects_prism_and_cluster_runners_pass_through():
    opts = streaming_options([]).get_all_options()
    assert opts["runner"] == "DirectRunner" and opts["allow_unsafe_triggers"] and opts["streaming"]
    opts = streaming_options(["--runner=FlinkRunner", "--flink_master=localhost:8081"]).get_all_options()
    assert opts["runner"] == "FlinkRunner" and not opts["allow_unsafe_triggers"] and opts["streaming"]


def test_unbounded_stream_equals_batch_and_picks_up_segments_landing_while_it_runs(tmp_path):
    seg = tmp_path / "landing"
    land(seg, 3, seed=1)
    producer = threading.Timer(2.5, land, args=(seg, 4), kwargs={"seed": 2})
    producer.start()
    stats = run_unbounded(seg, tmp_path / "stream", stop_after=7, interval=0.5)
    producer.join()
    assert stats.segments == 7 and stats.ticks >= 2  # the late segments came in a later tick
    run_batch([seg], tmp_path / "batch")
    assert figures(tmp_path / "stream") == figures(tmp_path / "batch")
    stats_sql = "select * from processor_stats order by all"
    assert querying.run(str(tmp_path / "stream"), stats_sql).rows == querying.run(str(tmp_path / "batch"), stats_sql).rows
    # a restart over the same landing folder finds nothing new: each segment exactly once
    again = run_unbounded(seg, tmp_path / "stream", stop_after=2, interval=0.5)
    assert again.segments == 0
    ids = _segment_ids(tmp_path / "stream")
    assert len(ids) == len(set(ids)) == 7


def test_the_micro_batch_stream_and_the_unbounded_stream_share_progress(tmp_path):
    from pipelines.stream import run_stream

    seg, wh = tmp_path / "landing", tmp_path / "wh"
    land(seg, 3, seed=3)
    run_stream(seg, wh, idle_exit_after=0)
    land(seg, 2, seed=4)
    assert run_unbounded(seg, wh, stop_after=3, interval=0.5).segments == 2


@pytest.mark.slow
def test_killing_the_unbounded_stream_at_random_moments_loses_and_duplicates_nothing(tmp_path):
    seg, wh = tmp_path / "landing", tmp_path / "wh"
    cmd = [sys.executable, "-m", "tenantry.cli", "run", "stream", "--unbounded", "--landing", str(seg),
           "--warehouse", str(wh), "--poll-interval", "0.5"]
    rng = random.Random(7)
    expected: dict[str, int] = {}
    for round_ in range(3):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for k, v in land(seg, 3, seed=200 + round_).items():
                expected[k] = expected.get(k, 0) + v
            time.sleep(rng.uniform(2.0, 6.0))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
    done = subprocess.run(cmd + ["--stop-after", "6"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    spans = dict(querying.run(str(wh), "select tenant_id, count(*) from spans group by 1").rows)
    requests = dict(querying.run(str(wh), "select tenant_id, sum(requests)::bigint from tenant_sre_hourly group by 1").rows)
    assert spans == expected and requests == expected
    ids = _segment_ids(wh)
    assert len(ids) == len(set(ids)) == len(landing.list_segments(seg))


def test_the_same_pipeline_watches_an_s3_prefix(tmp_path, monkeypatch):
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(k, v)
        s3 = boto3.client("s3", endpoint_url=url)
        s3.create_bucket(Bucket="landing")
        local = tmp_path / "local"
        expected = land(local, 4, seed=9)
        for f in landing.list_segments(local):
            s3.put_object(Bucket="landing", Key=f"prod/{f.name}", Body=f.read_bytes())
        s3.put_object(Bucket="landing", Key="prod/README.txt", Body=b"not a segment")
        stats = run_unbounded(tmp_path / "unused", tmp_path / "wh", stop_after=5, interval=0.5,
                              pattern="s3://landing/prod/*seg-*.arrow",
                              beam_args=[f"--s3_endpoint_url={url}", "--s3_access_key_id=test",
                                         "--s3_secret_access_key=test", "--s3_region_name=us-east-1"])
        assert stats.segments == 4
        spans = dict(querying.run(str(tmp_path / "wh"), "select tenant_id, count(*) from spans group by 1").rows)
        assert spans == expected
    finally:
        server.stop()


def test_sub_second_ticks_get_their_own_runs():
    from apache_beam.transforms.window import IntervalWindow

    from pipelines.unbounded import tick_run_id

    a, b = IntervalWindow(10.0, 10.5), IntervalWindow(10.5, 11.0)
    assert tick_run_id("x", a) != tick_run_id("x", b)


def test_the_unbounded_stream_compacts_between_local_rounds(tmp_path):
    seg, wh = tmp_path / "landing", tmp_path / "wh"
    land(seg, 3, seed=11)
    producer = threading.Timer(3.5, land, args=(seg, 3), kwargs={"seed": 12})
    producer.start()
    stats = run_unbounded(seg, wh, stop_after=8, interval=0.5, local_round=3.0, compact_every_rounds=1)
    producer.join()
    assert stats.segments == 6
    runs = [m["run_id"] for m in Warehouse(wh).committed_runs() if m["run_id"] != "__schema__"]
    assert any(r.startswith("c") for r in runs)  # ticks were folded into a compacted run
    run_batch([seg], tmp_path / "batch")
    assert figures(wh) == figures(tmp_path / "batch")
