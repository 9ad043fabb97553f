"""``tenantry.yaml``: the one configuration model, loaded and validated with errors for people.

Errors name the file, the dotted key and what was expected, e.g.::

    tenantry.yaml: tenants.acme.plan: unknown plan 'gold-2025'; known plans: free, pro

Sections: ``tenants`` (the catalog), ``meters``, ``plans``, ``slos``, ``cost``, ``processors``
(an ordered list, like a Collector pipeline) and ``pipeline`` settings. Every section is optional,
so a new user can start with an empty file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """The configuration is invalid; the message says where and what was expected."""


class _Model(BaseModel):
    # unknown keys are errors: a typo must not silently turn a setting off
    model_config = ConfigDict(extra="forbid", frozen=True)


from tenantry.conventions import TENANT_ID_RE, TENANT_ID_RULE  # noqa: E402


class Tenant(_Model):
    name: str | None = None
    tier: str | None = None
    plan: str | None = None
    #: when the current plan started (plan changes: see ``plan_changes``)
    plan_start: str | None = None
    plan_changes: list[dict[str, Any]] = Field(default_factory=list)
    trial_start: str | None = None
    #: account ids per billing provider: stripe_customer_id, aws_customer_account_id, ...
    billing: dict[str, str] = Field(default_factory=dict)


class Meter(_Model):
    name: str
    unit: str | None = None
    source: Literal["usage_events", "spans", "logs", "metric_points"] = "usage_events"
    filter: str | None = None
    aggregation: Literal["count", "sum", "max", "unique_count", "latest"] = "sum"
    value: str | None = None
    group_by: list[str] = Field(default_factory=list)
    period: Literal["hour", "day", "month"] = "day"


class Pipeline(_Model):
    #: Beam runner for the embedded default; the in-process runner never reaches the network
    runner: str = "FnApiRunner"
    #: rows per Arrow batch when reading inputs
    batch_rows: int = Field(default=65536, gt=0)


class Config(_Model):
    tenants: dict[str, Tenant] = Field(default_factory=dict)
    meters: list[Meter] = Field(default_factory=list)
    plans: dict[str, dict[str, Any]] = Field(default_factory=dict)
    slos: dict[str, Any] = Field(default_factory=dict)
    cost: dict[str, Any] = Field(default_factory=dict)
    #: ordered list; each item ``{type[/name]: {options}}`` (or a bare ``type[/name]`` string)
    processors: list[Any] = Field(default_factory=list)
    pipeline: Pipeline = Field(default_factory=Pipeline)
    #: free-form settings owned by later features (ledger, exports, alerts); validated by them
    ledger: dict[str, Any] = Field(default_factory=dict)
    exports: dict[str, Any] = Field(default_factory=dict)
    security: dict[str, Any] = Field(default_factory=dict)

    @field_validator("tenants")
    @classmethod
    def _tenant_ids(cls, v: dict[str, Tenant]) -> dict[str, Tenant]:
        for tid in v:
            if not TENANT_ID_RE.match(str(tid)):
                raise ValueError(
                    f"tenant id {tid!r} is not valid: use {TENANT_ID_RULE}"
                )
        return v

    @model_validator(mode="after")
    def _plans_exist(self) -> "Config":
        if self.plans:
            for tid, t in self.tenants.items():
                if t.plan and t.plan not in self.plans:
                    raise ValueError(
                        f"tenants.{tid}.plan: unknown plan {t.plan!r}; known plans: "
                        + ", ".join(sorted(self.plans))
                    )
        names = [m.name for m in self.meters]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"meters: duplicate meter names: {', '.join(dupes)}")
        return self


def _format_error(source: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see the README's configuration section)"
        lines.append(f"{source}: {loc}: {msg}")
    return "\n".join(lines)


def parse(data: Any, source: str = "tenantry.yaml") -> Config:
    """Validate already-loaded YAML data. Raises :class:`ConfigError` with located messages."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of sections at the top level, got {type(data).__name__}")
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_error(source, e)) from None


def load(path: str | Path | None) -> Config:
    """Load ``tenantry.yaml`` from ``path``; ``None`` gives the embedded defaults (empty config)."""
    if path is None:
        return Config()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: file not found (pass --config PATH, or omit it for the defaults)") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{p}: not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    return parse(data, str(p))
