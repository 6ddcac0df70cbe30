"""Applications' domain rules, without I/O."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from contracts import ApplicationSubmittedV1, Channel
from contracts.applications import ApplicationPaymentRequestedV1, ProcedureGroup
from services.applications import domain

S = domain.ApplicationStatus


def test_submitting_records_the_channel_and_announces_it() -> None:
    now = datetime(2026, 11, 24, 0, 0, tzinfo=UTC)
    app, event = domain.submit("JUMINHYO", Channel.COUNTER, now)
    assert app.status is domain.ApplicationStatus.SUBMITTED
    assert isinstance(event, ApplicationSubmittedV1)
    assert (event.application_id, event.channel, event.submitted_at) == (
        app.id,
        Channel.COUNTER,
        now,
    )
    assert event.aggregate_id() == str(app.id)


def test_a_naive_submission_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        domain.submit("JUMINHYO", Channel.ONLINE, datetime(2026, 11, 24))


# -- the state machine ------------------------------------------------------------------------

NOW = datetime(2026, 11, 24, 1, 0, tzinfo=UTC)


def procedure(fee_yen: int = 0, certificate: bool = False) -> domain.Procedure:
    return domain.Procedure(
        code="JUMINHYO",
        name_ja="住民票の写しの交付",
        department="市民部",
        group=ProcedureGroup.IDENTITY_REQUIRED,
        fee_yen=fee_yen,
        yields_certificate=certificate,
        form_schema={"type": "object"},
    )


def test_a_fee_free_application_waits_for_review_and_owes_nothing() -> None:
    app, _ = domain.submit(procedure(), Channel.ONLINE, NOW)
    assert app.status is S.SUBMITTED
    with pytest.raises(domain.NoFeeDue):
        domain.request_fee(app, procedure(), NOW)


def test_asking_for_the_fee_awaits_payment_and_tells_payments() -> None:
    proc = procedure(fee_yen=300)
    app, _ = domain.submit(proc, Channel.COUNTER, NOW, applicant_id=uuid.uuid4())
    assert app.fee_yen == 300
    app, [request] = domain.request_fee(app, proc, NOW)
    assert app.status is S.AWAITING_PAYMENT
    assert isinstance(request, ApplicationPaymentRequestedV1)
    assert (request.amount_yen, request.facility_code) == (300, "shiminka")
    assert request.applicant_id == app.applicant_id


def test_an_unpaid_application_is_neither_reviewed_nor_approved() -> None:
    app, _ = domain.submit(procedure(fee_yen=300), Channel.ONLINE, NOW)
    with pytest.raises(domain.FeeUnpaid):
        domain.start_review(app, NOW)
    in_review = replace(app, status=S.IN_REVIEW)  # even if it got there somehow
    with pytest.raises(domain.FeeUnpaid):
        domain.approve(in_review, NOW)


def test_the_whole_certificate_path() -> None:
    proc = procedure(fee_yen=450, certificate=True)
    app, _ = domain.submit(proc, Channel.ONLINE, NOW)
    app, _ = domain.request_fee(app, proc, NOW)
    app, _ = domain.record_payment(app, uuid.uuid4(), 450, NOW)
    app, _ = domain.start_review(app, NOW)
    app, _ = domain.approve(app, NOW)
    app, events = domain.issue_certificate(app, proc, "072036-2026-0000001", NOW)
    assert app.status is S.CERTIFICATE_ISSUED
    assert events[0].certificate_number == "072036-2026-0000001"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("status", "step"),
    [
        (S.SUBMITTED, "approve"),
        (S.AWAITING_PAYMENT, "start_review"),
        (S.IN_REVIEW, "withdraw"),
        (S.APPROVED, "withdraw"),
        (S.REJECTED, "start_review"),
        (S.WITHDRAWN, "record_payment"),
        (S.PAID, "record_payment"),
        (S.CERTIFICATE_ISSUED, "approve"),
    ],
)
def test_illegal_transitions_are_refused(status: domain.ApplicationStatus, step: str) -> None:
    app, _ = domain.submit(procedure(), Channel.ONLINE, NOW)
    app = replace(app, status=status)

    def attempt() -> object:
        if step == "record_payment":
            return domain.record_payment(app, uuid.uuid4(), 300, NOW)
        return getattr(domain, step)(app, NOW)

    with pytest.raises(domain.IllegalTransition, match=f"is {status.value}: cannot"):
        attempt()


def test_every_status_can_be_reached_and_final_ones_lead_nowhere() -> None:
    reachable = {S.SUBMITTED} | {t for ts in domain.ALLOWED.values() for t in ts}
    assert reachable == set(S)
    for final in (S.REJECTED, S.WITHDRAWN, S.CERTIFICATE_ISSUED):
        assert domain.ALLOWED[final] == frozenset()


def test_a_rejection_needs_a_reason() -> None:
    app, _ = domain.submit(procedure(), Channel.ONLINE, NOW)
    app, _ = domain.start_review(app, NOW)
    with pytest.raises(ValueError, match="reason"):
        domain.reject(app, "  ", NOW)
