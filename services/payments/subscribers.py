"""What payments consumes: terminal transactions (and application fee requests).

Terminals are outside cityhall, so their messages get two extra checks before any handler runs
(see ``admit``): the subject must be the terminal's own (``terminals.<facility>.<terminal>.tx.v1``,
matching the payload) and ``ce-id`` must be ``<terminal>/<transaction_id>``, so one terminal's
ids can never collide with another's in the inbox. A dead-lettered body has anything like a
card number masked, and the original message is erased from the stream.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg

from contracts.applications import ApplicationPaymentRequestedV1
from contracts.envelope import Envelope, Event
from contracts.payments import (
    TerminalSettlementV1,
    TerminalTransactionV1,
    mask_card_numbers,
    terminal_settlement_subject,
    terminal_subject,
)
from contracts.subjects import APPLICATIONS, TERMINALS
from services.payments.errors import PaymentError, TerminalTransactionConflict
from services.payments.handlers import ingestion, online, reconciliation
from services.payments.settings import payments_settings
from services.runtime.consumer import Batched, Handler, Recorder, Refused
from services.runtime.service import ConsumerBinding, ServiceContext
from services.runtime.streams import ConsumerDecl

TERMINAL_MESSAGES = ConsumerDecl(
    durable="payments_terminals",
    stream=TERMINALS,
    subjects=("terminals.>",),
)
"""Everything terminals publish: transactions and settlement batches, each checked against
its own subject by ``admit_terminal``."""

APPLICATION_FEES = ConsumerDecl(
    durable="payments_application_fees",
    stream=APPLICATIONS,
    subjects=(ApplicationPaymentRequestedV1.subject,),
)

T = TypeVar("T")


def admit_terminal_message(subject: str, event: Envelope[Any]) -> str | None:
    """Why a terminal's message is refused before it reaches the ledger, or None."""
    tx: TerminalTransactionV1 = event.data
    tokens = subject.split(".")
    if tokens[-5:] != ["terminals", tx.facility_code, tx.terminal_id, "tx", "v1"]:
        return (
            f"subject {subject!r} is not terminal {tx.terminal_id!r}'s own subject "
            f"({terminal_subject(tx.facility_code, tx.terminal_id)})"
        )
    if event.id != tx.message_id:
        return f"ce-id must be {tx.message_id!r} (terminal/transaction id), not {event.id!r}"
    return None


def admit_terminal_settlement(subject: str, event: Envelope[Any]) -> str | None:
    """Why a terminal's settlement batch is refused before it is reconciled, or None."""
    settlement: TerminalSettlementV1 = event.data
    facility, terminal = settlement.batch.facility_code, settlement.terminal_id
    expected = terminal_settlement_subject(facility, terminal)
    if subject.split(".")[-5:] != expected.split("."):
        return f"subject {subject!r} is not terminal {terminal!r}'s own subject ({expected})"
    if event.id != settlement.message_id:
        return f"ce-id must be {settlement.message_id!r} (terminal/batch id), not {event.id!r}"
    return None


def admit_terminal(subject: str, event: Envelope[Any]) -> str | None:
    """Each terminal subject carries one kind of message: anything else is refused (not
    skipped), so a terminal publishing the wrong kind hears about it in the DLQ."""
    if isinstance(event.data, TerminalSettlementV1):
        return admit_terminal_settlement(subject, event)
    return admit_terminal_message(subject, event)


def mask_card_numbers_in(body: bytes) -> bytes:
    """A dead-lettered body with its card numbers masked (``contracts.payments``)."""
    return mask_card_numbers(body.decode("utf-8", errors="replace")).encode()


def refusing(
    handler: Callable[[asyncpg.Connection, T], Awaitable[None]],
) -> Callable[[asyncpg.Connection, T], Awaitable[None]]:
    """Map the payment rules' refusals to dead letters with the reason (the one place)."""

    async def handle(conn: asyncpg.Connection, events: T) -> None:
        try:
            await handler(conn, events)
        except TerminalTransactionConflict as exc:
            reason = f"{type(exc).__name__}: {exc}"
            raise Refused(reason, record=_announcing(exc)) from exc
        except PaymentError as exc:
            raise Refused(f"{type(exc).__name__}: {exc}") from exc

    handle.__name__ = handler.__name__
    return handle


def _announcing(conflict: TerminalTransactionConflict) -> Recorder:
    """Finance hears of a conflicting repeat as it is dead-lettered (its own transaction)."""

    async def record(conn: asyncpg.Connection) -> None:
        await ingestion.announce_terminal_conflict(conn, conflict, datetime.now(UTC))

    return record


def consumers(ctx: ServiceContext) -> Sequence[ConsumerBinding]:
    async def create_payment_request(
        conn: asyncpg.Connection, event: Envelope[ApplicationPaymentRequestedV1]
    ) -> None:
        # Read when handling (settings are built once per running service): the contracts
        # export lists these bindings without a running service.
        settings = payments_settings(ctx)
        await online.create_payment_request(
            conn, event, settings.request_ttl_s, settings.sweep_grace_s
        )

    known_terminals: dict[str, str] = {}  # per running service, so per schema

    async def record_terminal_transactions(
        conn: asyncpg.Connection, events: Sequence[Envelope[TerminalTransactionV1]]
    ) -> None:
        await ingestion.record_terminal_transactions(conn, events, known_terminals)

    from_terminals: dict[type[Event], Handler] = {
        # keyed: every capture, refund and void claims its (terminal, transaction id) in
        # terminal_transactions for ever, the same key as its ce-id (see admit_terminal).
        TerminalTransactionV1: Batched(refusing(record_terminal_transactions), keyed=True),
        TerminalSettlementV1: refusing(reconciliation.record_terminal_settlement),
    }
    return [
        ConsumerBinding(
            APPLICATION_FEES,
            {ApplicationPaymentRequestedV1: refusing(create_payment_request)},
        ),
        ConsumerBinding(
            TERMINAL_MESSAGES, from_terminals, admit=admit_terminal, scrub=mask_card_numbers_in
        ),
    ]
