"""Receiver lifecycle and configuration: loopback by default, fail-closed settings, ports,
stats, and a clean SIGTERM shutdown of serve_forever."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tenantry import landing
from tenantry.receiver import Receiver, ReceiverConfigError, ReceiverError

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("addr", ["0.0.0.0:4318", "10.1.2.3:4318", "[::]:4318", "example.com:4318"])
def test_a_non_loopback_listen_address_is_refused_without_allow_remote(tmp_path, addr):
    with pytest.raises(ReceiverConfigError, match="not a loopback address.*allow_remote=True"):
        Receiver(tmp_path, http_listen=addr, grpc_listen=None)
    with pytest.raises(ReceiverConfigError, match="grpc_listen"):
        Receiver(tmp_path, http_listen=None, grpc_listen=addr)


def test_a_non_loopback_address_is_allowed_only_with_the_explicit_flag(tmp_path):
    r = Receiver(tmp_path, http_listen="0.0.0.0:0", grpc_listen=None, allow_remote=True)
    assert r._http_addr == ("0.0.0.0", 0)  # not started: nothing is exposed by this test


@pytest.mark.parametrize("addr", ["127.0.0.1:0", "[::1]:0", "localhost:0", "127.0.0.2:0"])
def test_loopback_addresses_are_accepted(tmp_path, addr):
    Receiver(tmp_path, http_listen=addr, grpc_listen=None)


@pytest.mark.parametrize("kwargs,match", [
    ({"http_listen": "4318"}, "not host:port"),
    ({"http_listen": "127.0.0.1:99999"}, "0-65535"),
    ({"http_listen": None, "grpc_listen": None}, "enable at least one"),
    ({"max_body_bytes": 0}, "max_body_bytes must be positive"),
    ({"flush_interval_s": -1}, "flush_interval_s must be positive"),
    ({"chain": object()}, "expected a collector_processors Processor"),
])
def test_bad_settings_fail_at_construction_with_a_message(tmp_path, kwargs, match):
    with pytest.raises(ReceiverConfigError, match=match):
        Receiver(tmp_path, **kwargs)


def test_port_zero_binds_free_ports_on_loopback_and_reports_them(tmp_path):
    with Receiver(tmp_path, http_listen="127.0.0.1:0", grpc_listen="127.0.0.1:0") as r:
        assert r.http_port and r.grpc_port and r.http_port != r.grpc_port
        assert httpx.get(f"http://127.0.0.1:{r.http_port}/healthz").status_code == 200
        with socket.create_connection(("127.0.0.1", r.grpc_port), timeout=2):
            pass


def test_a_grpc_port_in_use_is_a_start_error(tmp_path):
    with Receiver(tmp_path / "a", http_listen=None, grpc_listen="127.0.0.1:0") as first:
        second = Receiver(tmp_path / "b", http_listen=None, grpc_listen=f"127.0.0.1:{first.grpc_port}")
        with pytest.raises(ReceiverError, match="could not start"):
            second.start()


def test_a_port_in_use_is_a_start_error_naming_the_address(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        r = Receiver(tmp_path, http_listen=f"127.0.0.1:{port}", grpc_listen=None)
        with pytest.raises(ReceiverError, match=f"127.0.0.1:{port}"):
            r.start()


def test_stats_count_accepted_rejected_bytes_and_segments(tmp_path):
    with Receiver(tmp_path, http_listen="127.0.0.1:0", grpc_listen=None, flush_interval_s=0.01) as r:
        base = f"http://127.0.0.1:{r.http_port}"
        httpx.post(f"{base}/v1/traces", content=b"\x0a\x00", headers={"content-type": "application/x-protobuf"})
        httpx.post(f"{base}/v1/traces", content=b"x", headers={"content-type": "text/plain"})
    stats = r.stats()
    assert stats["http_accepted"] == 1
    assert stats["http_status_415"] == 1
    assert stats["http_bytes_received"] == 2
    assert stats["segments_written"] == 1 and stats["records_written"] == 1


def test_serve_forever_exits_cleanly_on_sigterm_with_everything_landed(tmp_path):
    script = (
        "import sys, logging; logging.basicConfig(level=logging.INFO)\n"
        "from tenantry.receiver import Receiver\n"
        "r = Receiver(sys.argv[1], http_listen='127.0.0.1:0', grpc_listen=None)\n"
        "orig = r.start\n"
        "def start():\n"
        "    orig(); print(r.http_port, flush=True); return r\n"
        "r.start = start\n"
        "r.serve_forever()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        port = int(proc.stdout.readline())
        resp = httpx.post(f"http://127.0.0.1:{port}/v1/logs", content=b"\x0a\x00",
                          headers={"content-type": "application/x-protobuf"})
        assert resp.status_code == 200
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "receiver stopped" in err and "segments_written=1" in err
    assert len(landing.list_segments(tmp_path)) == 1
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
