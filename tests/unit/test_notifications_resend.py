"""Resends as specifications: only a dead notification is sent again, to the address its
recipient has now."""

from __future__ import annotations

import uuid

import pytest

from services.notifications.domain import (
    AlreadyDelivered,
    AlreadyPending,
    Contact,
    NoCurrentAddress,
    NotificationKind,
    NotificationStatus,
    applicant_in_key,
    check_resendable,
    current_applicant_address,
    current_staff_address,
)


def test_only_a_dead_notification_is_sent_again() -> None:
    check_resendable(NotificationStatus.DEAD)
    with pytest.raises(AlreadyDelivered):
        check_resendable(NotificationStatus.SENT)
    for waiting in (NotificationStatus.PENDING, NotificationStatus.FAILED):
        with pytest.raises(AlreadyPending, match="GET /notifications/pending"):
            check_resendable(waiting)


def test_an_applicant_is_resent_to_the_contacts_address_as_it_is_now() -> None:
    applicant = uuid.uuid4()
    assert applicant_in_key(f"applicant:{applicant}") == applicant
    assert applicant_in_key("staff:operators:mailto:ops@example.jp") is None
    assert applicant_in_key("applicant:not-a-uuid") is None
    contact = Contact(email="new@example.jp", opt_outs=frozenset({NotificationKind.PAYMENT}))
    assert current_applicant_address(contact, NotificationKind.CERTIFICATE) == "new@example.jp"
    assert current_applicant_address(contact, None) == "new@example.jp"  # rule out of force
    with pytest.raises(NoCurrentAddress, match="opted out of payment"):
        current_applicant_address(contact, NotificationKind.PAYMENT)
    with pytest.raises(NoCurrentAddress, match="no contact"):
        current_applicant_address(None, NotificationKind.PAYMENT)


def test_a_staff_target_is_resent_while_notify_staff_still_names_it() -> None:
    staff = {"operators": ["mailto:ops@example.jp", "https://erp.example.jp/hook"]}
    key = "staff:operators:mailto:ops@example.jp"
    assert current_staff_address(key, staff) == "ops@example.jp"
    hook = "staff:operators:https://erp.example.jp/hook"
    assert current_staff_address(hook, staff) == "https://erp.example.jp/hook"
    with pytest.raises(NoCurrentAddress, match="'operators'"):
        current_staff_address("staff:operators:mailto:old@example.jp", staff)
    with pytest.raises(NoCurrentAddress):
        current_staff_address("staff:gone:mailto:ops@example.jp", staff)
