"""Notifications' rules as specifications: who is told, how attempts end, how retries wait."""

from __future__ import annotations

import random
import uuid

import pytest
from pydantic import ValidationError

from contracts.notifications import NotificationChannel, RecipientKind
from services.notifications.domain import (
    Contact,
    GiveUp,
    Language,
    NotificationKind,
    PermanentFailure,
    RetryLater,
    RetryPolicy,
    Rule,
    RuleBook,
    Sent,
    Target,
    TemporaryFailure,
    applicant_recipient,
    decide,
    mask_address,
    staff_recipients,
)

POLICY = RetryPolicy(max_attempts=4, base_s=2.0, max_s=10.0)


def test_a_sent_message_keeps_the_providers_message_id() -> None:
    assert decide(1, "<abc@cityhall>", POLICY) == Sent("<abc@cityhall>")


def test_a_temporary_failure_is_retried_later() -> None:
    outcome = decide(1, TemporaryFailure("SMTP 451 try later"), POLICY)
    assert isinstance(outcome, RetryLater)
    assert "451" in outcome.reason


def test_a_permanent_failure_gives_up_at_once() -> None:
    outcome = decide(1, PermanentFailure("SMTP 550 no such user"), POLICY)
    assert outcome == GiveUp("permanent: SMTP 550 no such user", permanent=True)


def test_the_last_attempt_of_a_temporary_failure_gives_up() -> None:
    outcome = decide(4, TemporaryFailure("timeout"), POLICY)
    assert isinstance(outcome, GiveUp)
    assert outcome.permanent is False
    assert "after 4 attempts" in outcome.reason


def test_backoff_grows_exponentially_with_jitter_and_a_ceiling() -> None:
    rng = random.Random(7)
    for attempt, ceiling in [(1, 2.0), (2, 4.0), (3, 8.0), (4, 10.0), (30, 10.0)]:
        delays = [POLICY.delay_s(attempt, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling / 10  # jitter spreads retries out


def test_an_applicant_who_opted_out_of_a_kind_is_not_a_recipient() -> None:
    applicant = uuid.uuid4()
    contact = Contact(email="a@example.jp", opt_outs=frozenset({NotificationKind.PAYMENT}))
    assert applicant_recipient(applicant, contact, NotificationKind.PAYMENT) is None
    recipient = applicant_recipient(applicant, contact, NotificationKind.CERTIFICATE)
    assert recipient is not None
    assert recipient.kind is RecipientKind.APPLICANT
    assert recipient.key == f"applicant:{applicant}"
    assert recipient.language is Language.JA


def test_an_applicant_without_a_contact_is_not_a_recipient() -> None:
    assert applicant_recipient(uuid.uuid4(), None, NotificationKind.PAYMENT) is None


def test_staff_targets_are_email_or_webhook() -> None:
    staff = {"finance_office": ["mailto:kaikei@example.jp", "https://erp.example/hook"]}
    targets = [r.target for r in staff_recipients("finance_office", staff)]
    assert targets == [
        Target(NotificationChannel.EMAIL, "kaikei@example.jp"),
        Target(NotificationChannel.WEBHOOK, "https://erp.example/hook"),
    ]
    assert staff_recipients("nobody", staff) == []
    with pytest.raises(ValueError, match="mailto"):
        Target.parse("ftp://x")


def test_a_contact_with_a_bad_email_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError) as refused:
        Contact(email="not-an-address")
    assert refused.value.errors()[0]["loc"] == ("email",)


def test_a_rule_applies_only_when_its_conditions_hold() -> None:
    rule = Rule(
        id="payment-confirmation",
        event="PaymentCaptured.v1",
        to="applicant",
        kind=NotificationKind.PAYMENT,
        template="payment_captured",
        when={"application_id": "present"},
    )
    assert rule.applies_to({"application_id": uuid.uuid4()})
    assert not rule.applies_to({"application_id": None})


def test_a_rule_book_refuses_two_rules_with_one_id() -> None:
    rule = {
        "id": "a-rule",
        "event": "ApplicationSubmitted.v1",
        "to": "applicant",
        "kind": "application_status",
        "template": "application_submitted",
    }
    with pytest.raises(ValidationError, match="used twice"):
        RuleBook.model_validate({"rules": [rule, rule]})


def test_a_rule_on_an_event_contracts_do_not_define_waits() -> None:
    book = RuleBook.model_validate(
        {
            "rules": [
                {
                    "id": "later",
                    "event": "SomethingNew.v1",
                    "to": "staff:operators",
                    "kind": "staff_alert",
                    "template": "something_new",
                }
            ]
        }
    )
    assert [r.id for r in book.dormant()] == ["later"]


def test_operators_see_addresses_masked() -> None:
    assert mask_address("taro@example.jp") == "t****@example.jp"
    assert mask_address("https://erp.example/hooks/secret-token") == "https://erp.example/…"


def test_a_bad_notify_setting_stops_start_up_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from services.notifications.settings import load_notification_settings
    from services.runtime.settings import SettingsError

    monkeypatch.setenv("NOTIFY_SMTP_PORT", "seventy")
    monkeypatch.setenv("NOTIFY_MAX_ATTEMPTS", "0")
    with pytest.raises(SettingsError) as stopped:
        load_notification_settings()
    message = str(stopped.value)
    assert "NOTIFY_SMTP_PORT" in message
    assert "'seventy'" in message
    assert "NOTIFY_MAX_ATTEMPTS" in message


def test_a_sender_never_claims_more_than_it_can_start_within_half_a_lease() -> None:
    from services.notifications.handlers import Notifier
    from services.notifications.sender import Sender
    from services.notifications.settings import NotificationSettings

    slow = NotificationSettings(email_rate_per_s=0.1, claim_lease_s=300, sender_batch=100)
    assert Sender(None, Notifier.from_settings(slow), {}).claim_size() == 15  # type: ignore[arg-type]
    fast = NotificationSettings(email_rate_per_s=500, claim_lease_s=300, sender_batch=100)
    assert Sender(None, Notifier.from_settings(fast), {}).claim_size() == 100  # type: ignore[arg-type]
