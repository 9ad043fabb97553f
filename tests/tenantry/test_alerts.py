"""tenantry alerts: what fires on the planted workload, --since, JSON, and the webhook."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import threading

import pytest
from click.testing import CliRunner

from tenantry import alerts
from tenantry.alerts_cli import alerts as alerts_cmd
from tests.sql.test_sre_views import T0, build_warehouse, make_spans, planted_rows

NOW = T0 + dt.timedelta(hours=30)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("alerts")
    build_warehouse(root, make_spans(planted_rows()))
    return str(root)


def test_every_planted_problem_fires_and_the_control_does_not(planted):
    found = alerts.firing_alerts(planted, dt.timedelta(hours=24), now=NOW)
    by = {(a.source, a.tenant_id, a.kind) for a in found}
    assert ("slo", "slowco", "page_1h_5m") in by
    assert ("noisy_neighbour", "noisy", "noisy_neighbour") in by
    assert ("security", "intruder", "auth_failures_anomaly") in by
    assert ("security", "intruder", "cross_tenant_access") in by
    assert ("security", "intruder", "tenant_mismatch") in by
    assert not [a for a in found if a.tenant_id == "quiet"]


def test_since_excludes_older_alerts(planted):
    assert alerts.firing_alerts(planted, dt.timedelta(minutes=30), now=NOW + dt.timedelta(days=2)) == []


@pytest.mark.parametrize("text, expected", [("24h", dt.timedelta(hours=24)), ("30m", dt.timedelta(minutes=30)),
                                            (" 7d ", dt.timedelta(days=7))])
def test_parse_since(text, expected):
    assert alerts.parse_since(text) == expected


@pytest.mark.parametrize("text", ["", "24", "h", "-1h", "1y", "1h; drop", "９h", None])
def test_parse_since_refuses_garbage(text):
    with pytest.raises(alerts.AlertError, match="--since"):
        alerts.parse_since(text)


class _Recorder(http.server.BaseHTTPRequestHandler):
    bodies: list = []
    status = 200

    def do_POST(self):  # noqa: N802
        type(self).bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    _Recorder.bodies, _Recorder.status = [], 200
    srv = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/hook"
    srv.shutdown()
    srv.server_close()


def test_webhook_receives_the_alerts_as_json(planted, server):
    found = alerts.firing_alerts(planted, dt.timedelta(hours=24), now=NOW)
    assert alerts.post_webhook(server, found) == 200
    (body,) = _Recorder.bodies
    assert len(body["alerts"]) == len(found)
    assert {"source", "kind", "severity", "tenant_id", "time", "summary", "details"} <= set(body["alerts"][0])


def test_webhook_failure_is_an_error_naming_the_url(server):
    _Recorder.status = 500
    with pytest.raises(alerts.AlertError, match="answered 500"):
        alerts.post_webhook(server, [])
    with pytest.raises(alerts.AlertError, match="http:// or https://"):
        alerts.post_webhook("file:///etc/passwd", [])


def test_cli_json_and_webhook(planted, server):
    res = CliRunner().invoke(alerts_cmd, ["--warehouse", planted, "--since", "100000d", "--format", "json",
                                          "--webhook", server])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["alerts"] and _Recorder.bodies[0]["alerts"]


def test_cli_table_and_errors(planted, tmp_path):
    res = CliRunner().invoke(alerts_cmd, ["--warehouse", planted, "--since", "100000d"])
    assert res.exit_code == 0 and "slowco" in res.output and "quiet " not in res.output
    assert CliRunner().invoke(alerts_cmd, ["--warehouse", planted, "--since", "soon"]).exit_code == 1
    missing = CliRunner().invoke(alerts_cmd, ["--warehouse", str(tmp_path / "nope")])
    assert missing.exit_code == 1 and "no warehouse here" in missing.output


def test_cli_has_help():
    res = CliRunner().invoke(alerts_cmd, ["--help"])
    assert res.exit_code == 0 and "--webhook" in res.output
