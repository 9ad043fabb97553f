"""Firing alerts from the warehouse: SLO burn rates, noisy neighbours and security findings.

``firing_alerts(warehouse, since=24h)`` reads three views and returns one :class:`Alert` per
episode or finding whose time falls in ``[now - since, now]``:

- ``slo_burn_alerts`` (severity ``page`` or ``ticket``, by rule), time = the episode's last firing minute;
- ``noisy_neighbours`` (severity ``ticket``), time = the hour;
- ``security_findings`` (severity ``high`` / ``medium`` / ``low``), time = the finding's hour or day.

``post_webhook(url, alerts)`` POSTs ``{"alerts": [...]}`` as JSON and raises :class:`AlertError`
naming the URL when the receiver fails or answers non-2xx.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import urllib.error
import urllib.request

from tenantry.warehouse import Warehouse


class AlertError(RuntimeError):
    """Alerts could not be read or delivered; the message says where and what to do."""


@dataclasses.dataclass(frozen=True)
class Alert:
    source: str  # slo | noisy_neighbour | security
    kind: str  # the burn rule, "noisy_neighbour", or the finding kind
    severity: str
    tenant_id: str
    time: str  # ISO 8601, UTC
    summary: str
    details: dict

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


_SINCE = re.compile(r"\A\s*([0-9]{1,6})\s*([smhdw])\s*\Z")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str) -> dt.timedelta:
    """``90m``, ``24h``, ``7d``... → timedelta; :class:`AlertError` otherwise."""
    m = _SINCE.match(text) if isinstance(text, str) else None
    if not m:
        raise AlertError(f"--since {str(text)[:40]!r}: use a number and a unit, e.g. 30m, 24h, 7d")
    return dt.timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})


def _iso(t) -> str:
    if isinstance(t, dt.datetime):
        return t.astimezone(dt.timezone.utc).isoformat()
    return str(t)


def firing_alerts(warehouse: str, since: dt.timedelta = dt.timedelta(hours=24),
                  now: dt.datetime | None = None) -> list[Alert]:
    """Every alert of the warehouse whose time is within ``since`` before ``now`` (default: now)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    lo = now - since
    con = Warehouse(warehouse).connect()
    try:
        con.execute("set timezone = 'UTC'")
        slo = con.execute(
            "select tenant_id, slo, rule, severity, factor, started_at, last_firing_at, firing_minutes, "
            "max_long_burn_rate, max_short_burn_rate from slo_burn_alerts "
            "where last_firing_at >= ? and started_at <= ? order by last_firing_at, tenant_id, slo, rule",
            [lo, now]).fetchall()
        noisy = con.execute(
            "select noisy_tenant_id, service_name, hour, share, baseline_share, others_latency_ratio "
            "from noisy_neighbours where hour >= ? and hour <= ? order by hour, service_name, noisy_tenant_id",
            [lo, now]).fetchall()
        sec = con.execute(
            "select tenant_id, time, kind, severity, score, events, evidence_trace_ids, detail "
            "from security_findings where time >= ? and time <= ? order by time, tenant_id, kind",
            [lo, now]).fetchall()
    except Exception as e:  # duckdb.Error: views missing in an old warehouse
        raise AlertError(f"{warehouse}: reading alert views failed ({e}); run `tenantry views` to rebuild them") from None
    finally:
        con.close()
    out = [
        Alert("slo", rule, sev, tenant, _iso(last),
              f"{tenant}: SLO {slo_name} burning {long_rate:.1f}x budget ({rule}, threshold {factor}x)",
              {"slo": slo_name, "started_at": _iso(start), "last_firing_at": _iso(last),
               "firing_minutes": minutes, "max_long_burn_rate": long_rate, "max_short_burn_rate": short_rate})
        for tenant, slo_name, rule, sev, factor, start, last, minutes, long_rate, short_rate in slo
    ]
    out += [
        Alert("noisy_neighbour", "noisy_neighbour", "ticket", tenant, _iso(hour),
              f"{tenant}: {share:.0%} of {service} load (baseline {base:.0%}); others' latency {ratio:.1f}x",
              {"service_name": service, "share": share, "baseline_share": base, "others_latency_ratio": ratio})
        for tenant, service, hour, share, base, ratio in noisy
    ]
    out += [
        Alert("security", kind, sev, tenant, _iso(time), f"{tenant}: {kind} ({detail})",
              {"score": score, "events": events, "evidence_trace_ids": list(traces or []), "detail": detail})
        for tenant, time, kind, sev, score, events, traces, detail in sec
    ]
    return out


def post_webhook(url: str, alerts: list[Alert], timeout: float = 10.0) -> int:
    """POST ``{"alerts": [...]}`` to ``url``; returns the HTTP status."""
    if not re.match(r"\Ahttps?://", url or ""):
        raise AlertError(f"--webhook {url!r}: use an http:// or https:// URL")
    body = json.dumps({"alerts": [a.to_json() for a in alerts]}, default=str).encode()
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        raise AlertError(f"webhook {url} answered {e.code} {e.reason}; the alerts were not delivered") from None
    except (urllib.error.URLError, OSError) as e:
        raise AlertError(f"webhook {url} unreachable ({getattr(e, 'reason', e)}); the alerts were not delivered") from None
