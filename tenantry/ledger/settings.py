"""The ``ledger:`` section of ``tenantry.yaml``, validated when the run starts.

::

    ledger:
      grace_period: 3d          # a period closes this long after it ends (s, m, h, d); later usage
                                # for it becomes an `adjustment` entry instead of a new revision
      dedup_window_days: 35     # event ids are remembered this long after their event time (>= 35)
      max_past_days: 35         # older events are quarantined (timestamp_out_of_range);
                                # must not exceed dedup_window_days, so every accepted event's
                                # duplicates are still caught
      max_future_minutes: 10    # events further ahead than this (clock skew) are quarantined
      strict: false             # true: meters without a definition are quarantined (undeclared_meter)
"""

from __future__ import annotations

import datetime as dt
import re

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tenantry.config import Config, ConfigError

MIN_DEDUP_WINDOW_DAYS = 35
_DURATION = re.compile(r"\A\s*(\d{1,9})\s*([smhd])\s*\Z")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(value: object) -> dt.timedelta:
    """``"90m"``, ``"36h"``, ``"3d"``, ``"45s"`` or a number of seconds, as a timedelta."""
    if isinstance(value, dt.timedelta):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return dt.timedelta(seconds=value)
    m = _DURATION.match(value) if isinstance(value, str) else None
    if not m:
        raise ValueError(f"expected a duration like 90m, 36h or 3d, got {str(value)[:40]!r}")
    return dt.timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})


class LedgerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: how long after a period ends it stays open for new revisions
    grace_period: dt.timedelta = dt.timedelta(days=3)
    #: how long (after its event time) an event id is remembered for deduplication
    dedup_window_days: int = Field(default=MIN_DEDUP_WINDOW_DAYS, ge=MIN_DEDUP_WINDOW_DAYS, le=3660)
    #: events older than this (relative to the run) are quarantined
    max_past_days: int = Field(default=35, ge=1, le=3660)
    #: events ahead of the run's clock by more than this are quarantined
    max_future_minutes: int = Field(default=10, ge=0, le=60 * 24 * 366)
    #: quarantine usage of meters without a definition instead of accepting it
    strict: bool = False

    @field_validator("grace_period", mode="before")
    @classmethod
    def _duration(cls, v: object) -> dt.timedelta:
        return parse_duration(v)

    @model_validator(mode="after")
    def _window_covers_past(self) -> "LedgerSettings":
        if self.max_past_days > self.dedup_window_days:
            raise ValueError(
                f"max_past_days ({self.max_past_days}) exceeds dedup_window_days ({self.dedup_window_days}): "
                "an event older than the window could be counted twice; raise dedup_window_days"
            )
        return self


def settings(cfg: Config, source: str = "tenantry.yaml") -> LedgerSettings:
    """The validated ledger settings of ``cfg``; :class:`ConfigError` naming ``ledger.<key>``."""
    try:
        return LedgerSettings.model_validate(cfg.ledger or {})
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(p) for p in ("ledger", *err["loc"]))
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = ("unknown key; known: grace_period, dedup_window_days, max_past_days, "
                       "max_future_minutes, strict")
            lines.append(f"{source}: {loc}: {msg}")
        raise ConfigError("\n".join(lines)) from None
