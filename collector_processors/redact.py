"""``redact``: remove or mask personal data and secrets before anything is stored.

What it looks at: the values of ``attributes`` and ``resource_attributes`` (spans, logs, metric
points), ``dimensions`` (usage events), log ``body`` and span ``status_message``.

What it finds (``detectors``, all on by default, plus your own ``patterns``):

- ``email``: e-mail addresses;
- ``card``: payment card numbers, 13-19 digits with optional spaces or dashes, **Luhn-checked**
  (order ids that merely look like cards are left alone);
- ``bearer``: the token after ``Bearer `` (the word is kept: ``Bearer ****``);
- ``jwt``: JSON Web Tokens (``eyJ...``.``...``.``...``);
- ``aws_key``: AWS access key ids (``AKIA...``, ``ASIA...``).

What it does with a match (``mode``): ``mask`` replaces it with ``mask`` (``****``); ``hash``
replaces it with ``hmac:<16 hex>``, a keyed HMAC-SHA256, so equal values stay joinable (same
user in two spans) without being readable, and cannot be reversed by hashing guesses without the
key (``hash_key``, or the environment variable named by ``hash_key_env``; at least 16 characters;
a hash-mode processor without a key is a configuration error); ``drop`` removes the whole
attribute (key and value) from maps and cuts the match out of text columns.

Keys: ``blocked_keys`` have their whole value redacted whatever it holds (passwords, cookies).
``allowed_keys`` is an allow-list for ``attributes`` and ``dimensions``: when it is set, every
other key is removed (``on_denied_key: remove``, counted ``redacted:denied_key``) or the row is
quarantined as ``denied_attribute`` (``on_denied_key: quarantine``). **The allow-list fails closed:
an empty list allows nothing**; leave it out (null) to allow every key. ``ignored_keys`` are never
touched: not removed, not scanned. Resource attributes are scanned but not allow-listed.

``tenants`` holds per-tenant overrides: any option but ``tenants`` itself, merged over the
top-level options for that tenant's rows (tenant ids must be in the catalog when there is one).

Counters: one ``redacted:<detector>`` per value rewritten or removed, per tenant
(``<detector>`` is a built-in name, a ``patterns`` name, ``blocked_key`` or ``denied_key``): a
security signal of which tenants leak what.

How it stays fast: one RE2 pass (``pc.match_substring_regex``) with all detectors ORed finds the
few values that contain a candidate; only those are rewritten (``pc.replace_substring_regex``);
Python runs only for Luhn checks of card candidates and for HMACs of matched values.

Example (every option)::

    processors:
      - redact/strict:
          mode: hash                 # mask (default) | hash | drop
          mask: "****"
          detectors: [email, card, bearer, jwt, aws_key]
          patterns: {ssn: '\\b\\d{3}-\\d{2}-\\d{4}\\b'}
          blocked_keys: [password, http.request.header.cookie]
          allowed_keys: [http.method, http.route, http.status_code, user.id, tenant.id]
          ignored_keys: [tenant.id]
          on_denied_key: remove      # or quarantine
          body: true                 # scan log bodies and span status messages
          hash_key_env: TENANTRY_REDACT_KEY
          hash_key: null             # prefer the environment variable
          tenants:
            acme: {mode: drop}
"""

from __future__ import annotations

import os
import re
from collections import Counter
from typing import Any, Literal, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from collector_processors import base, maps
from collector_processors.base import Processor, ProcessorConfigError, Result
from collector_processors.options import Options
from collector_processors.redact_detectors import BUILTIN, Detector, hmac_hex, luhn_ok
from tenantry import schemas
from tenantry.config import TENANT_ID_RE, Tenant

DetectorName = Literal["email", "card", "bearer", "jwt", "aws_key"]
_MAPS_ALLOWLISTED = ("attributes", "dimensions")
_MAPS = ("attributes", "resource_attributes", "dimensions")
_TEXT = ("body", "status_message")


class RedactOptions(Options):
    #: what to do with a match: mask, hash (keyed HMAC) or drop
    mode: Literal["mask", "hash", "drop"] = "mask"
    #: replacement text in mask mode
    mask: str = "****"
    #: built-in detectors to run
    detectors: list[DetectorName] = Field(default_factory=lambda: list(BUILTIN))
    #: extra regular expressions, by name (RE2 syntax that Python's re also accepts)
    patterns: dict[str, str] = Field(default_factory=dict)
    #: keys whose whole value is always redacted
    blocked_keys: list[str] = Field(default_factory=list)
    #: allow-list of attribute / dimension keys; null allows all, [] allows nothing (fails closed)
    allowed_keys: list[str] | None = None
    #: keys never removed nor scanned
    ignored_keys: list[str] = Field(default_factory=list)
    #: a key not in allowed_keys: remove it, or quarantine the row (denied_attribute)
    on_denied_key: Literal["remove", "quarantine"] = "remove"
    #: also scan log bodies and span status messages
    body: bool = True
    #: HMAC key for hash mode (secret; prefer hash_key_env)
    hash_key: str | None = None
    #: environment variable holding the HMAC key when hash_key is not set
    hash_key_env: str = "TENANTRY_REDACT_KEY"
    #: per-tenant overrides: tenant id -> any of the options above
    tenants: dict[str, dict[str, Any]] = Field(default_factory=dict)

    _secret_fields = frozenset({"hash_key"})

    @field_validator("patterns")
    @classmethod
    def _patterns(cls, v: dict[str, str]) -> dict[str, str]:
        for name, rx in v.items():
            if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name) or name in BUILTIN:
                raise ValueError(f"{name!r}: a pattern name is 1-64 letters, digits, _ . - and not a built-in detector")
            try:
                re.compile(rx)
                pc.match_substring_regex(pa.array([""]), rx)
            except (re.error, pa.ArrowInvalid) as e:
                raise ValueError(f"{name}: not a valid regular expression (RE2 and Python): {e}") from None
            if re.fullmatch(rx, ""):
                raise ValueError(f"{name}: the pattern matches the empty string")
        return v


class _Engine:
    """One set of options, ready to run: detectors compiled, HMAC key resolved."""

    def __init__(self, o: RedactOptions, where: str):
        self.o = o
        self.detectors: list[Detector] = [BUILTIN[d] for d in o.detectors]
        self.detectors += [Detector(n, rx) for n, rx in o.patterns.items()]
        self.any_pattern = "|".join(f"(?:{d.pattern})" for d in self.detectors) or None
        self.key: bytes | None = None
        if o.mode == "hash":
            key = o.hash_key or os.environ.get(o.hash_key_env)
            if not key:
                raise ProcessorConfigError(
                    f"{where}: hash_key: mode hash needs a key: set the environment variable "
                    f"{o.hash_key_env} (or hash_key) to a secret of at least 16 characters"
                )
            if len(key) < 16:
                raise ProcessorConfigError(f"{where}: hash_key: the key is too short; use at least 16 characters")
            self.key = key.encode()
        self.allowed = None if o.allowed_keys is None else pa.array(sorted(set(o.allowed_keys) | set(o.ignored_keys)), pa.string())
        self.ignored = pa.array(o.ignored_keys, pa.string())
        self.blocked = pa.array(o.blocked_keys, pa.string())

    def apply(self, batch: pa.Table, views: maps.BatchViews | None = None) -> tuple[pa.Table, np.ndarray, Counter]:
        """Redacted batch, rows to quarantine (denied keys), counts per (tenant, outcome)."""
        counts: Counter = Counter()
        denied_rows = np.zeros(batch.num_rows, dtype=bool)
        tenant = batch.column("tenant_id")
        for name in _MAPS:
            if name in batch.column_names:
                col, denied = self._map(batch.column(name), tenant, counts, name in _MAPS_ALLOWLISTED, views)
                denied_rows |= denied
                batch = batch.set_column(batch.schema.get_field_index(name), name, col)
        if self.o.body:
            for name in _TEXT:
                if name in batch.column_names:
                    col = self._text(batch.column(name).combine_chunks(), tenant, counts)
                    batch = batch.set_column(batch.schema.get_field_index(name), name, col)
        return batch, denied_rows, counts

    def _map(self, column, tenant, counts: Counter, allow_listed: bool, views: maps.BatchViews | None = None):
        e = maps.entries_of(column, views)
        denied_rows = np.zeros(e.num_rows, dtype=bool)
        if not len(e):
            return column, denied_rows
        keep = np.ones(len(e), dtype=bool)
        if self.any_pattern:
            # the candidate scan below needs the value encoding anyway; it also tells the nulls
            scan = e.value_codes()[0] >= 0
        else:
            scan = maps.np_bool(pc.is_valid(e.values))
        if len(self.ignored):
            scan &= ~e.keys_in(self.ignored)
        if allow_listed and self.allowed is not None:
            denied = ~e.keys_in(self.allowed)
            if denied.any():
                if self.o.on_denied_key == "quarantine":
                    denied_rows = e.rows_where(denied)
                _count(counts, e, tenant, denied, "denied_key")
                keep &= ~denied
                scan &= ~denied
        # blocked and candidate positions are disjoint: collect both, rewrite the values once
        at: list[np.ndarray] = []
        new_values: list[pa.Array] = []
        if len(self.blocked):
            blocked = e.keys_in(self.blocked) & scan
            if blocked.any():
                idx = np.nonzero(blocked)[0]
                _count(counts, e, tenant, blocked, "blocked_key")
                if self.o.mode == "drop":
                    keep &= ~blocked
                else:
                    old = e.values.take(pa.array(idx)).to_pylist()
                    at.append(idx)
                    new_values.append(pa.array([self._whole(v) for v in old], pa.string()))  # blocked values only
                scan &= ~blocked
        if self.any_pattern and scan.any():
            cand = _candidates(e, self.any_pattern) & scan
            if cand.any():
                idx = np.nonzero(cand)[0]
                sub_tenant = pc.take(tenant, pa.array(e.parent[idx]))
                new, hit = self._rewrite(e.values.take(pa.array(idx)), sub_tenant, counts)
                if self.o.mode == "drop":
                    drop = np.zeros(len(e), dtype=bool)
                    drop[idx[hit]] = True
                    keep &= ~drop
                else:
                    at.append(idx)
                    new_values.append(new)
        if keep.all() and not at:
            return column, denied_rows
        values = changed = None
        if at:
            changed = np.concatenate(at)
            order = np.argsort(changed, kind="stable")
            changed = changed[order]
            new = pa.concat_arrays([a.cast(pa.string()) for a in new_values]).take(pa.array(order))
            values = maps.replace_at(e.values, changed, new)
        col, entries = e.derive(values, keep, changed=changed)
        if views is not None:
            views.put(col, entries)
        return col, denied_rows

    def _text(self, column: pa.Array, tenant, counts: Counter) -> pa.Array:
        if not self.any_pattern or len(column) == 0:
            return column
        cand = maps.match_any(column, self.any_pattern)
        if not cand.any():
            return column
        idx = pa.array(np.nonzero(cand)[0])
        new, _ = self._rewrite(column.take(idx), pc.take(tenant, idx), counts, text=True)
        return pc.replace_with_mask(column, pa.array(cand), new)

    def _rewrite(self, values: pa.Array, tenant: pa.Array, counts: Counter, text: bool = False):
        """Apply every detector to candidate values; returns (new values, hit per value)."""
        hit_any = np.zeros(len(values), dtype=bool)
        mode = "mask" if (self.o.mode == "drop" and not text) else self.o.mode
        for d in self.detectors:
            hit = maps.np_bool(pc.match_substring_regex(values, d.pattern))
            if not hit.any():
                continue
            if d.luhn or mode == "hash":
                idx = np.nonzero(hit)[0]
                done = [self._python_sub(d, v, mode) for v in values.take(pa.array(idx)).to_pylist()]
                real = np.array([changed for _, changed in done], dtype=bool)
                hit[idx[~real]] = False
                if real.any():
                    values = pc.replace_with_mask(
                        values, pa.array(hit), pa.array([s for s, ok in done if ok], pa.string())
                    )
            else:
                repl = _escape(self.o.mask) if mode == "mask" else ""
                values = pc.replace_substring_regex(values, d.pattern, (r"\1" if d.keep_prefix else "") + repl)
            if hit.any():
                counts.update({(t, d.name): c for t, c in _value_counts(pc.filter(tenant, pa.array(hit)))})
                hit_any |= hit
        return values, hit_any

    def _python_sub(self, d: Detector, text: str, mode: str) -> tuple[str, bool]:
        """Rewrite one candidate value in Python (card Luhn checks, HMACs). Fails closed."""
        changed = False

        def repl(m: re.Match) -> str:
            nonlocal changed
            if d.luhn and not luhn_ok(m.group(0)):
                return m.group(0)
            changed = True
            prefix = m.group(1) if d.keep_prefix else ""
            secret = m.group(0)[len(prefix):]
            if mode == "hash":
                return prefix + "hmac:" + hmac_hex(self.key, secret)
            return prefix + (self.o.mask if mode == "mask" else "")

        out = d.compiled.sub(repl, text)
        if not changed and not d.luhn and d.compiled.search(text) is None:
            # RE2 saw a match that Python's re does not: redact the whole value rather than leak it
            return self._whole(text), True
        return out, changed

    def _whole(self, value: str) -> str:
        if self.o.mode == "hash":
            return "hmac:" + hmac_hex(self.key, value)
        return self.o.mask if self.o.mode == "mask" else ""


class Redact(Processor):
    """Mask, hash or drop personal data and secrets (see the module docstring)."""

    type_name = "redact"
    accepts_views = True

    def __init__(
        self,
        name: str | None = None,
        options: Mapping | RedactOptions | None = None,
        tenants: Mapping[str, Tenant] | None = None,
    ):
        super().__init__(name)
        self.options = options if isinstance(options, RedactOptions) else RedactOptions.build(options, self.name)
        self.engine = _Engine(self.options, self.name)
        self.overrides: dict[str, _Engine] = {}
        base_opts = self.options.model_dump(exclude_defaults=True, exclude={"tenants"})
        for tid, over in self.options.tenants.items():
            where = f"{self.name}: tenants.{tid}"
            if not TENANT_ID_RE.match(tid) or (tenants and tid not in tenants):
                known = ", ".join(sorted(tenants or {})[:20]) or "(no catalog; ids must be valid tenant ids)"
                raise ProcessorConfigError(f"{where}: unknown tenant {tid!r}; known tenants: {known}")
            if isinstance(over, Mapping) and "tenants" in over:
                raise ProcessorConfigError(f"{where}: tenants: overrides cannot be nested")
            opts = RedactOptions.build({**base_opts, **(over or {})}, where)
            self.overrides[tid] = _Engine(opts, where)
        self._override_ids = pa.array(sorted(self.overrides), pa.string())

    def process(self, table: str, batch: pa.Table | pa.RecordBatch, views: maps.BatchViews | None = None) -> Result:
        batch = base.as_table(batch)
        if batch.num_rows == 0:
            return Result(batch, schemas.empty("quarantine"))
        if self.overrides:
            out, denied, counts = self._split_apply(batch)
        else:
            out, denied, counts = self.engine.apply(batch, views)
        stats: Counter = Counter({(t, self.name, f"{base.REDACTED}:{k}"): n for (t, k), n in counts.items()})
        quarantined = schemas.empty("quarantine")
        if denied.any():
            mask = pa.array(denied)
            bad = batch.filter(mask)  # the original record: it is evidence of what was sent
            quarantined = base.quarantine_rows(
                table, bad, schemas.Reason.DENIED_ATTRIBUTE, self.name, "attribute key not in allowed_keys"
            )
            stats.update(base.count_by_tenant(bad, self.name, f"{base.QUARANTINED}:{schemas.Reason.DENIED_ATTRIBUTE}"))
            out = out.filter(pc.invert(mask))
        stats.update(base.count_by_tenant(out, self.name, base.KEPT, views))
        return Result(out, quarantined, stats)

    def scrub_quarantine(self, quarantined: pa.Table) -> pa.Table:
        """Quarantine rows with this redactor's detectors applied to their ``raw`` record and
        ``detail`` text: a row rejected before (or by) this processor must not carry the personal
        data it would have removed to disk. Not counted as redactions (the row was not kept)."""
        if quarantined.num_rows == 0 or not self.engine.any_pattern:
            return quarantined
        tenant = quarantined.column("tenant_id")
        for name in ("raw", "detail"):
            col = quarantined.column(name).combine_chunks()
            engines = [self.engine, *self.overrides.values()]  # the strictest reading of every override
            for engine in engines:
                col = engine._text(col, tenant, Counter())
            quarantined = quarantined.set_column(quarantined.schema.get_field_index(name), name, col)
        return quarantined

    def _split_apply(self, batch: pa.Table):
        """Run each tenant's override engine on its rows, the default on the rest; keep row order."""
        codes = pc.fill_null(pc.index_in(batch.column("tenant_id"), value_set=self._override_ids), -1)
        codes = codes.to_numpy(zero_copy_only=False)
        groups = [(np.nonzero(codes == -1)[0], self.engine)]
        for i, tid in enumerate(self._override_ids.to_pylist()):
            groups.append((np.nonzero(codes == i)[0], self.overrides[tid]))
        outs, order, denied, counts = [], [], [], Counter()
        for idx, engine in groups:
            if len(idx) == 0:
                continue
            out, d, c = engine.apply(batch.take(pa.array(idx)))
            outs.append(out)
            order.append(idx)
            denied.append(d)
            counts.update(c)
        perm = np.argsort(np.concatenate(order), kind="stable")
        return pa.concat_tables(outs).take(pa.array(perm)), np.concatenate(denied)[perm], counts


def _candidates(e: maps.MapEntries, pattern: str) -> np.ndarray:
    """Entries whose value matches ``pattern``: one RE2 pass over the distinct values only."""
    codes, distinct = e.value_codes()
    if not len(distinct):
        return np.zeros(len(e), dtype=bool)
    hit = maps.np_bool(pc.match_substring_regex(distinct, pattern))
    return np.append(hit, False)[codes]  # code -1 (null) never matches


def _count(counts: Counter, e: maps.MapEntries, tenant, mask: np.ndarray, outcome: str) -> None:
    t = pc.take(tenant, pa.array(e.parent[mask]))
    counts.update({(k, outcome): n for k, n in _value_counts(t)})


def _value_counts(arr) -> list[tuple[str, int]]:
    if len(arr) == 0:
        return []
    return [(v["values"], v["counts"]) for v in pc.value_counts(arr).to_pylist()]


def _escape(s: str) -> str:
    """Escape a literal for an RE2 replacement string."""
    return s.replace("\\", "\\\\")
