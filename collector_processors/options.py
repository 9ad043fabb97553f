"""Processor options: one pydantic model per processor, validated when the processor is built.

Every processor declares its options as a subclass of :class:`Options` (frozen, unknown keys are
errors) with a comment per field. :meth:`Options.build` turns pydantic's errors into a
:class:`~collector_processors.base.ProcessorConfigError` that names the key and says what was
expected, e.g. ``redact/strict: mode: expected one of mask, hash, drop; got 'blur'``. The registry
prefixes the position in the list (``processors[2] redact/strict: ...``).
"""

from __future__ import annotations

import re
import typing
from datetime import timedelta
from typing import Annotated, Any, Mapping

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from collector_processors.base import ProcessorConfigError

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")


def _duration(v: Any) -> Any:
    """``"30d"``, ``"1h"``, ``"15m"``, ``"90s"``, ``"500ms"``, a number of seconds, or null."""
    if v is None or isinstance(v, timedelta):
        return v
    if isinstance(v, bool):
        raise ValueError(f"expected a duration like 30d, 1h, 15m, 90s; got {v!r}")
    if isinstance(v, (int, float)):
        if v < 0:
            raise ValueError(f"expected a positive duration; got {v!r}")
        return timedelta(seconds=v)
    if isinstance(v, str):
        m = _DURATION_RE.match(v)
        if m:
            return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    raise ValueError(f"expected a duration like 30d, 1h, 15m, 90s; got {v!r}")


#: a duration option: ``30d``, ``1h``, ``15m``, ``90s``, ``500ms`` or seconds as a number
Duration = Annotated[timedelta, BeforeValidator(_duration)]


def format_duration(td: timedelta | None) -> str | None:
    """The shortest ``30d`` / ``1h`` / ``90s`` spelling of ``td`` (for ``describe``)."""
    if td is None:
        return None
    secs = td.total_seconds()
    for unit in ("d", "h", "m", "s"):
        n = secs / _UNITS[unit]
        if n >= 1 and n == int(n):
            return f"{int(n)}{unit}"
    return f"{int(secs * 1000)}ms"


class Options(BaseModel):
    """Base of every processor's options model."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    #: option names whose values are secrets and are never printed by ``describe``
    _secret_fields: typing.ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def build(cls, options: Mapping[str, Any] | None, where: str):
        """Validate ``options``; raise ProcessorConfigError prefixed with ``where`` naming the key."""
        if options is None:
            options = {}
        if not isinstance(options, Mapping):
            raise ProcessorConfigError(
                f"{where}: expected a mapping of options (or nothing); got {type(options).__name__} {options!r}"
            )
        try:
            return cls.model_validate(dict(options))
        except ValidationError as e:
            raise ProcessorConfigError("\n".join(f"{where}: {m}" for m in _messages(cls, e))) from None

    def summary(self) -> dict[str, Any]:
        """Options that differ from their defaults, secrets hidden, durations spelled ``1h``."""
        out: dict[str, Any] = {}
        for name, value in self.model_dump(exclude_defaults=True).items():
            if name in self._secret_fields:
                value = "***" if not isinstance(value, dict) else f"<{len(value)} entries>"
            elif isinstance(value, timedelta):
                value = format_duration(value)
            out[name] = value
        return out


def _messages(model: type[BaseModel], err: ValidationError) -> list[str]:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(options)"
        kind = e["type"]
        got = e.get("input")
        if kind == "extra_forbidden":
            known = ", ".join(sorted(model.model_fields))
            lines.append(f"{loc}: unknown option; known options: {known}")
        elif kind == "literal_error":
            expected = e.get("ctx", {}).get("expected", "")
            choices = ", ".join(x.strip().strip("'") for x in re.split(r",| or ", expected) if x.strip())
            lines.append(f"{loc}: expected one of {choices}; got {got!r}")
        elif kind == "missing":
            lines.append(f"{loc}: required option is missing")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            msg = msg[0].lower() + msg[1:] if msg else msg
            if msg.startswith("input should be"):
                msg = "expected" + msg[len("input should be") :]
            if "; got" not in msg and kind != "value_error":
                msg += f"; got {_short(got)}"
            lines.append(f"{loc}: {msg}")
    return lines


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 80 else r[:77] + "..."
