import pytest

from collector_processors.base import ProcessorConfigError
from collector_processors.redact import Redact
from collector_processors.redact_detectors import luhn_ok
from tenantry.config import Tenant

from conftest import HOSTILE, assert_accounted, attrs_of, make_batch

KEY = "k" * 32
CARD = "4111 1111 1111 1111"  # a Luhn-valid test card
NOT_CARD = "4111 1111 1111 1112"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"


def _values(res, table, key="v"):
    return [a.get(key) if a else None for a in attrs_of(res.kept, table)]


@pytest.mark.parametrize("text,detector", [
    ("mail bob@example.com now", "email"),
    (f"card {CARD}", "card"),
    ("card 4111-1111-1111-1111", "card"),
    ("Authorization: Bearer abc.DEF-123", "bearer"),
    (f"token {JWT}", "jwt"),
    ("key AKIAABCDEFGHIJKLMNOP", "aws_key"),
])
def test_each_detector_masks_and_counts(table, text, detector):
    res = Redact().process(table, make_batch(table, [{"tenant": "acme", "attrs": {"v": text}}]))
    out = _values(res, table)[0]
    assert "****" in out
    assert res.stats[("acme", "redact", f"redacted:{detector}")] == 1


def test_bearer_keeps_the_scheme_word(table):
    res = Redact().process(table, make_batch(table, [{"attrs": {"v": "Bearer s3cr3t"}}]))
    assert _values(res, table) == ["Bearer ****"]


def test_card_candidates_failing_luhn_are_left_alone(table):
    res = Redact().process(table, make_batch(table, [{"attrs": {"v": f"order {NOT_CARD}"}}]))
    assert _values(res, table) == [f"order {NOT_CARD}"]
    assert not any(k[2].startswith("redacted") for k in res.stats)


def test_luhn():
    assert luhn_ok(CARD) and luhn_ok("5555-5555-5555-4444") and not luhn_ok(NOT_CARD) and not luhn_ok("0" * 12)


def test_hash_mode_is_keyed_and_joinable(table):
    rows = [{"attrs": {"v": "a@x.io"}}, {"attrs": {"v": "a@x.io"}}, {"attrs": {"v": "b@x.io"}}]
    res = Redact(options={"mode": "hash", "hash_key": KEY}).process(table, make_batch(table, rows))
    v = _values(res, table)
    assert v[0] == v[1] != v[2] and v[0].startswith("hmac:") and "x.io" not in v[0]
    other = Redact(options={"mode": "hash", "hash_key": "z" * 32}).process(table, make_batch(table, rows[:1]))
    assert _values(other, table)[0] != v[0]


def test_hash_key_from_environment(table, monkeypatch):
    monkeypatch.setenv("MY_REDACT_KEY", KEY)
    p = Redact(options={"mode": "hash", "hash_key_env": "MY_REDACT_KEY"})
    assert _values(p.process(table, make_batch(table, [{"attrs": {"v": "a@x.io"}}])), table)[0].startswith("hmac:")
    assert "***" == p.describe()["options"].get("hash_key", "***")


def test_hash_mode_without_key_fails_at_build(monkeypatch):
    monkeypatch.delenv("TENANTRY_REDACT_KEY", raising=False)
    with pytest.raises(ProcessorConfigError, match="hash_key: mode hash needs a key"):
        Redact(options={"mode": "hash"})


def test_drop_mode_removes_the_attribute(table):
    res = Redact(options={"mode": "drop"}).process(table, make_batch(table, [{"attrs": {"v": "a@x.io", "ok": "fine"}}]))
    assert attrs_of(res.kept, table) == [{"ok": "fine"}]


def test_log_body_is_scanned_and_cut_in_drop_mode():
    res = Redact(options={"mode": "drop"}).process("logs", make_batch("logs", [{"body": "user a@x.io failed"}]))
    assert res.kept.column("body").to_pylist() == ["user  failed"]
    res = Redact().process("logs", make_batch("logs", [{"body": f"paid with {CARD}"}]))
    assert res.kept.column("body").to_pylist() == ["paid with ****"]


def test_custom_patterns_are_named_in_counters(table):
    p = Redact(options={"patterns": {"ssn": r"\b\d{3}-\d{2}-\d{4}\b"}})
    res = p.process(table, make_batch(table, [{"tenant": "acme", "attrs": {"v": "ssn 123-45-6789"}}]))
    assert _values(res, table) == ["ssn ****"]
    assert res.stats[("acme", "redact", "redacted:ssn")] == 1


def test_allow_list_fails_closed_when_empty(table):
    res = Redact(options={"allowed_keys": []}).process(table, make_batch(table, [{"tenant": "acme", "attrs": {"a": "1", "b": "2"}}]))
    assert attrs_of(res.kept, table) == [{}]
    assert res.stats[("acme", "redact", "redacted:denied_key")] == 2


def test_allow_list_keeps_listed_and_ignored_keys(table):
    p = Redact(options={"allowed_keys": ["a"], "ignored_keys": ["tenant.id"]})
    res = p.process(table, make_batch(table, [{"attrs": {"a": "1", "b": "2", "tenant.id": "acme"}}]))
    assert attrs_of(res.kept, table) == [{"a": "1", "tenant.id": "acme"}]


def test_denied_key_can_quarantine_the_row(table):
    p = Redact(options={"allowed_keys": ["a"], "on_denied_key": "quarantine"})
    res = p.process(table, make_batch(table, [{"attrs": {"a": "1", "b": "2"}}, {"attrs": {"a": "1"}}]))
    assert res.quarantined.column("reason").to_pylist() == ["denied_attribute"]
    assert_accounted(res, 2)


def test_ignored_keys_are_not_scanned(table):
    res = Redact(options={"ignored_keys": ["v"]}).process(table, make_batch(table, [{"attrs": {"v": "a@x.io"}}]))
    assert _values(res, table) == ["a@x.io"]


def test_blocked_keys_redact_the_whole_value(table):
    res = Redact(options={"blocked_keys": ["password"]}).process(table, make_batch(table, [{"attrs": {"password": "hunter2"}}]))
    assert _values(res, table, "password") == ["****"]


def test_per_tenant_override(table):
    p = Redact(options={"tenants": {"acme": {"mode": "drop"}}})
    rows = [{"tenant": "globex", "attrs": {"v": "a@x.io"}}, {"tenant": "acme", "attrs": {"v": "a@x.io"}}, {"tenant": "globex", "attrs": {"v": "ok"}}]
    res = p.process(table, make_batch(table, rows))
    assert res.kept.column("tenant_id").to_pylist() == ["globex", "acme", "globex"]  # order preserved
    assert _values(res, table) == ["****", None, "ok"]


def test_override_for_unknown_tenant_is_a_config_error():
    with pytest.raises(ProcessorConfigError, match="tenants.newco: unknown tenant"):
        Redact(options={"tenants": {"newco": {"mode": "drop"}}}, tenants={"acme": Tenant()})


def test_hostile_input_never_raises(table):
    rows = [{"attrs": {h or "empty": h, "n": None}} for h in HOSTILE] + [{"attrs": None}]
    res = Redact().process(table, make_batch(table, rows))
    assert_accounted(res, len(rows))
    assert res.kept.num_rows == len(rows)
    assert Redact().process(table, make_batch(table, [])).kept.num_rows == 0


def test_long_values_with_many_matches(table):
    text = " ".join(f"u{i}@x.io" for i in range(1000))  # ~10k characters
    res = Redact().process(table, make_batch(table, [{"attrs": {"v": text}}]))
    assert "@" not in _values(res, table)[0]


@pytest.mark.parametrize("options,message", [
    ({"mode": "blur"}, "mode: expected one of mask, hash, drop; got 'blur'"),
    ({"detectors": ["ssn"]}, "detectors.0: expected one of"),
    ({"patterns": {"bad": "("}}, "patterns: bad: not a valid regular expression"),
    ({"patterns": {"empty": "x*"}}, "matches the empty string"),
    ({"mode": "hash", "hash_key": "short"}, "too short"),
])
def test_bad_config_names_the_key(options, message):
    with pytest.raises(ProcessorConfigError, match=message.replace("(", r"\(")):
        Redact(options=options)


@pytest.mark.parametrize("table", ["spans", "logs", "usage_events"])
def test_a_row_quarantined_before_redaction_keeps_no_personal_data_in_its_raw_record(table):
    from collector_processors.attribute_tenant import AttributeTenant
    from collector_processors.base import Chain

    chain = Chain([AttributeTenant(options={"policy": "quarantine"}), Redact()])
    batch = make_batch(table, [{"tenant": "x'; DROP TABLE spans;--", "attrs": {"user.email": "jane@example.com"}},
                               {"tenant": "acme", "attrs": {"user.email": "joe@example.com"}}])
    res = chain.process(table, batch)
    assert res.quarantined.num_rows == 1 and res.kept.num_rows == 1
    raw = res.quarantined.column("raw").to_pylist()[0]
    assert "jane@example.com" not in raw and "DROP TABLE" in raw  # the evidence stays, the e-mail goes
