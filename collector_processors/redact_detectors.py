"""The built-in detectors of ``redact`` and the two checks that need Python (Luhn, HMAC).

Every pattern is written in the common subset of RE2 (pyarrow compute) and Python's ``re``: the
vectorized pass uses RE2, the Python pass (card Luhn checks, HMACs) uses ``re`` on the few values
RE2 flagged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re


@dataclasses.dataclass(frozen=True)
class Detector:
    #: the name counters use: ``redacted:<name>``
    name: str
    #: the regular expression of one match
    pattern: str
    #: group 1 of the pattern is kept in front of the replacement (``Bearer ****``)
    keep_prefix: bool = False
    #: a match is redacted only if its digits pass the Luhn check
    luhn: bool = False

    @property
    def compiled(self) -> re.Pattern:
        return _compile(self.pattern)


_CACHE: dict[str, re.Pattern] = {}


def _compile(pattern: str) -> re.Pattern:
    if pattern not in _CACHE:
        _CACHE[pattern] = re.compile(pattern)
    return _CACHE[pattern]


BUILTIN: dict[str, Detector] = {
    d.name: d
    for d in (
        Detector("email", r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
        # 13-19 digits, optionally grouped by single spaces or dashes; Luhn decides
        Detector("card", r"\b\d(?:[ -]?\d){12,18}\b", luhn=True),
        Detector("bearer", r"((?i:bearer)\s+)[A-Za-z0-9\-._~+/]+=*", keep_prefix=True),
        Detector("jwt", r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"),
        Detector("aws_key", r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b"),
    )
}


def luhn_ok(candidate: str) -> bool:
    """True when the digits of ``candidate`` (13-19 of them) pass the Luhn checksum."""
    digits = [ord(c) - 48 for c in candidate if "0" <= c <= "9"]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def hmac_hex(key: bytes, value: str) -> str:
    """The first 16 hex digits (64 bits) of HMAC-SHA256(key, value): joinable, not readable."""
    return hmac.new(key, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:16]
