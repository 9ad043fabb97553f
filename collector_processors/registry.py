"""Build the processor chain from ``tenantry.yaml``, the way a Collector pipeline is built.

``processors:`` is an ordered list; each item is ``{"type[/name]": {options}}`` or a bare
``"type[/name]"`` string (all defaults)::

    processors:
      - attribute_tenant: {policy: quarantine}
      - validate
      - redact/strict: {mode: hash}
      - limit_cardinality: {max_values: 500}
      - sample: {tiers: {free: 10, pro: 50}}

An empty (or missing) list gives :data:`DEFAULT_CHAIN`: ``attribute_tenant`` with policy
``unattributed`` and ``validate`` with its defaults. The receiver and the pipelines build the same
chain from the same configuration. Errors name the item: ``processors[2] redact/strict: mode:
expected one of mask, hash, drop; got 'blur'``.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from collector_processors.attribute_tenant import AttributeTenant
from collector_processors.base import Chain, Processor, ProcessorConfigError
from collector_processors.limit_cardinality import LimitCardinality
from collector_processors.redact import Redact
from collector_processors.sample import Sample
from collector_processors.validate import Validate
from tenantry.config import Config

#: processor type -> factory(name, options, config)
FACTORIES: dict[str, Callable[[str, Any, Config], Processor]] = {
    "attribute_tenant": lambda name, opts, cfg: AttributeTenant(name, opts, tenants=cfg.tenants),
    "validate": lambda name, opts, cfg: Validate(name, opts),
    "redact": lambda name, opts, cfg: Redact(name, opts, tenants=cfg.tenants),
    "limit_cardinality": lambda name, opts, cfg: LimitCardinality(name, opts),
    "sample": lambda name, opts, cfg: Sample(name, opts),
}

#: what an empty ``processors:`` list means
DEFAULT_CHAIN: list[Any] = [{"attribute_tenant": {"policy": "unattributed"}}, "validate"]

_NAME_RE = re.compile(r"^[a-z_]+(/[A-Za-z0-9_.-]{1,64})?$")


def known_types() -> list[str]:
    return sorted(FACTORIES)


def build_chain(config: Config) -> Chain:
    """The configured chain (or :data:`DEFAULT_CHAIN`); raises ProcessorConfigError naming the item."""
    items = list(config.processors) or DEFAULT_CHAIN
    procs: list[Processor] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        where = f"processors[{i}]"
        full, options = _split_item(item, where)
        ptype = full.split("/", 1)[0]
        if ptype not in FACTORIES:
            raise ProcessorConfigError(
                f"{where}: unknown processor type {ptype!r}; known types: {', '.join(known_types())}"
            )
        if full in seen:
            raise ProcessorConfigError(f"{where}: {full!r} appears twice; give each instance a name (type/name)")
        seen.add(full)
        try:
            procs.append(FACTORIES[ptype](full, options, config))
        except ProcessorConfigError as e:
            raise ProcessorConfigError("\n".join(f"{where} {line}" for line in str(e).splitlines())) from None
    return Chain(procs)


def describe_chain(chain: Chain) -> list[dict]:
    """One ``{name, type, options}`` per processor, in order, secrets hidden (for the CLI)."""
    return [p.describe() for p in chain]


def _split_item(item: Any, where: str) -> tuple[str, Any]:
    if isinstance(item, str):
        full, options = item.strip(), None
    elif isinstance(item, dict) and len(item) == 1:
        ((full, options),) = item.items()
        full = str(full).strip()
    else:
        raise ProcessorConfigError(
            f"{where}: expected 'type[/name]' or a mapping with one key {{type[/name]: {{options}}}}; got {item!r}"
        )
    if not _NAME_RE.match(full):
        raise ProcessorConfigError(
            f"{where}: {full!r} is not 'type' or 'type/name' (name: letters, digits, _ . -); "
            f"known types: {', '.join(known_types())}"
        )
    return full, options
