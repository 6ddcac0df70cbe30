"""Demo traffic (デモ): months of a living city through the real services.

* **Payments**: every terminal registered under the stack home (``cityhall terminals register
  <facility>`` writes ``<home>/terminals/<id>.json``) publishes terminal transactions over
  NATS with its own credentials, exactly as a terminal does: captures of each method (cash
  giving way to QR codes, e-money and cards month by month), a few refunds and voids. Their
  ``occurred_at`` spreads over the last ``months`` months, so the dashboard shows trends.
* **Applications**: citizens apply online and counter and mail staff enter applications over
  HTTP (``POST /applications``) for the catalog's procedures, with forms filled from each
  procedure's JSON Schema. Applications are stamped by the service at arrival, so they all
  fall in the current month (the API takes no back-dating, on purpose).

``plan_transactions`` is pure and seeded, so the same seed gives the same city.
"""

from __future__ import annotations

import json
import random
import string
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import nats

from contracts.applications import Channel
from contracts.envelope import cloudevent_headers
from contracts.facilities import FACILITIES_BY_CODE, PaidFor
from contracts.payments import PaymentMethod, TerminalTransactionV1
from contracts.subjects import absolute
from services.reporting.domain import TOKYO
from services.runtime.auth import mint_applicant_token

BRANDS: dict[PaymentMethod, tuple[str, ...]] = {
    PaymentMethod.QR: ("PayPay", "d払い", "au PAY", "楽天ペイ", "メルペイ"),
    PaymentMethod.EMONEY: ("交通系IC", "nanaco", "WAON", "楽天Edy", "iD", "QUICPay"),
    PaymentMethod.CREDIT: ("Visa", "Mastercard", "JCB", "Amex", "Diners"),
}
FEES: dict[PaidFor, tuple[tuple[int, ...], str]] = {
    PaidFor.ADMISSION: ((200, 500, 800, 1000), "観覧料"),
    PaidFor.FACILITY_USE: ((300, 600, 1500, 3000), "施設使用料"),
    PaidFor.CERTIFICATE_FEES: ((300, 300, 300, 450, 750, 200, 400), "証明書等発行手数料"),
    PaidFor.PARKING_PASSES: ((2000, 3100, 5200), "定期券等"),
}


class NoTerminals(RuntimeError):
    """No terminal is registered under the stack home: nothing can publish payments."""


@dataclass(frozen=True)
class Terminal:
    terminal_id: str
    facility_code: str
    subject: str
    nkey_seed: str
    inbox_prefix: str

    @classmethod
    def load(cls, path: Path) -> Terminal:
        """A terminal's credential file (`cityhall terminals register`)."""
        d = json.loads(path.read_text())
        return cls(
            d["terminal_id"], d["facility_code"], d["subject"], d["nkey_seed"], d["inbox_prefix"]
        )


def registered_terminals(home: Path) -> list[Terminal]:
    found = [Terminal.load(p) for p in sorted((home / "terminals").glob("*.json"))]
    if not found:
        raise NoTerminals(
            f"no terminal is registered under {home}: run `cityhall terminals register "
            "<facility>` (e.g. shiminka, bijutsukan, sogo-taiikukan) first"
        )
    return found


def _cash_share(month_index: int, months: int) -> float:
    """Cash falls from about 60% of payments to about 30% over the demo's months."""
    return 0.6 - 0.3 * (month_index / max(months - 1, 1))


def _fee(facility: str, rng: random.Random) -> tuple[int, str]:
    known = FACILITIES_BY_CODE.get(facility)
    fees, item = FEES[known.paid_for if known else PaidFor.CERTIFICATE_FEES]
    return rng.choice(fees), item


def month_starts(today: date, months: int) -> list[date]:
    first = today.replace(day=1)
    out = []
    for back in range(months - 1, -1, -1):
        y, m = divmod(first.year * 12 + first.month - 1 - back, 12)
        out.append(date(y, m + 1, 1))
    return out


def plan_transactions(
    terminals: list[Terminal], months: int, per_month: int, today: date, seed: int
) -> Iterator[tuple[Terminal, dict[str, Any]]]:
    """Terminal transactions (payload dicts) in time order within each month."""
    rng = random.Random(seed)
    run = "".join(rng.choices(string.ascii_uppercase, k=6))
    for index, start in enumerate(month_starts(today, months)):
        last_day = (start.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
        if start.year == today.year and start.month == today.month:
            last_day = today
        cash_share = _cash_share(index, months)
        times = sorted(
            datetime(start.year, start.month, rng.randint(1, last_day.day), tzinfo=TOKYO)
            + timedelta(hours=rng.randint(8, 17), minutes=rng.randint(0, 59))
            for _ in range(per_month)
        )
        for n, when in enumerate(times):
            terminal = rng.choice(terminals)
            # Letters between the numbers: payments refuses anything that looks like a card
            # number (13-19 digits, separators allowed) anywhere in a transaction.
            capture = _capture(terminal, f"D{run}M{start:%Y%m}N{n:05d}", when, cash_share, rng)
            yield terminal, capture
            reversal = _reversal(capture, when, rng)
            if reversal is not None:
                yield terminal, reversal


def _capture(
    terminal: Terminal, tid: str, when: datetime, cash_share: float, rng: random.Random
) -> dict[str, Any]:
    amount, item = _fee(terminal.facility_code, rng)
    if rng.random() < cash_share:
        method, brand = PaymentMethod.CASH, None
    else:
        method = rng.choices(
            (PaymentMethod.QR, PaymentMethod.EMONEY, PaymentMethod.CREDIT), (5, 3, 2)
        )[0]
        brand = rng.choice(BRANDS[method])
    capture: dict[str, Any] = {
        "transaction_id": tid,
        "terminal_id": terminal.terminal_id,
        "facility_code": terminal.facility_code,
        "kind": "capture",
        "method": method.value,
        "brand": brand,
        "amount_yen": amount,
        "item": item,
        "occurred_at": when.isoformat(),
    }
    if method is PaymentMethod.CREDIT:
        capture["card"] = {
            "token": "tok_" + "".join(rng.choices(string.ascii_letters, k=24)),
            "brand": brand,
            "last4": f"{rng.randint(0, 9999):04d}",
        }
    return capture


def _reversal(capture: dict[str, Any], when: datetime, rng: random.Random) -> dict[str, Any] | None:
    """Now and then a refund (返金, in part or in full, a little later) or a void (取消: the
    clerk keyed the wrong amount) of ``capture``."""
    tid, amount = capture["transaction_id"], capture["amount_yen"]
    after = {k: v for k, v in capture.items() if k != "card"}
    chance = rng.random()
    if chance < 0.02:
        return after | {
            "transaction_id": f"{tid}-R",
            "kind": "refund",
            "amount_yen": rng.choice((amount, max(1, amount // 2))),
            "original_transaction_id": tid,
            "occurred_at": (when + timedelta(minutes=30)).isoformat(),
        }
    if chance < 0.03:
        return after | {
            "transaction_id": f"{tid}-V",
            "kind": "void",
            "original_transaction_id": tid,
            "occurred_at": (when + timedelta(minutes=1)).isoformat(),
        }
    return None


def _headers(terminal: Terminal, payload: dict[str, Any]) -> dict[str, str]:
    return cloudevent_headers(
        id=f"{terminal.terminal_id}/{payload['transaction_id']}",
        source=f"/terminals/{terminal.terminal_id}",
        type=TerminalTransactionV1.event_type,
        time=datetime.now(TOKYO),
    )


async def publish_payments(
    nats_url: str,
    namespace: str,
    plan: list[tuple[Terminal, dict[str, Any]]],
    progress: Callable[[int], None],
) -> int:
    """Each terminal publishes its own transactions with its own NATS credentials."""
    connections: dict[str, Any] = {}
    try:
        for terminal, payload in plan:
            nc = connections.get(terminal.terminal_id)
            if nc is None:
                nc = await nats.connect(
                    nats_url.split(","),
                    nkeys_seed_str=terminal.nkey_seed,
                    inbox_prefix=terminal.inbox_prefix,
                    name=f"demo-terminal-{terminal.terminal_id}",
                )
                connections[terminal.terminal_id] = nc
            await nc.jetstream().publish(
                absolute(namespace, terminal.subject),
                json.dumps(payload, ensure_ascii=False).encode(),
                headers=_headers(terminal, payload),
            )
            progress(1)
    finally:
        for nc in connections.values():
            await nc.close()
    return len(plan)


def form_for(schema: dict[str, Any]) -> dict[str, Any]:
    """A form that satisfies a simple JSON Schema (required fields filled with plain values)."""
    props: dict[str, Any] = schema.get("properties", {})
    form: dict[str, Any] = {}
    for name in schema.get("required", []):
        spec = props.get(name, {})
        if "enum" in spec:
            form[name] = spec["enum"][0]
        elif spec.get("type") == "integer":
            form[name] = max(1, int(spec.get("minimum", 1)))
        elif spec.get("type") == "boolean":
            form[name] = True
        elif spec.get("type") == "object":
            form[name] = form_for(spec)
        elif spec.get("type") == "array":
            form[name] = ["デモ"] * max(1, int(spec.get("minItems", 1)))
        elif spec.get("format") == "email":
            form[name] = "demo@example.jp"
        elif spec.get("format") == "date":
            form[name] = "2026-12-01"
        elif spec.get("format") == "date-time":
            form[name] = "2026-12-01T10:00:00+09:00"
        else:
            form[name] = "デモ"
    return form


async def submit_applications(
    http: httpx.AsyncClient,
    count: int,
    seed: int,
    progress: Callable[[int], None],
    staff_token: str | None = None,
    applicant_secret: str | None = None,
) -> tuple[int, int]:
    """Citizens and staff apply over HTTP (``http`` is a client on the applications service);
    return (accepted, refused by the service). Citizens sign in with a token signed with
    ``applicant_secret`` (the local login gateway's, APPLICANT_JWT_SECRET); without it they
    apply anonymously (group 1 allows that)."""
    rng = random.Random(seed)
    accepted = refused = 0
    staff_headers = {"Authorization": f"Bearer {staff_token}"} if staff_token else {}
    # Without a staff credential only citizens apply (counter and mail entries are staff's).
    channels = (Channel.ONLINE, Channel.COUNTER, Channel.MAIL) if staff_token else (Channel.ONLINE,)
    weights = (45, 45, 10) if staff_token else (1,)
    if count:
        page = (await http.get("/procedures", params={"online": "true", "limit": 200})).json()
        procedures = page["items"]
        # Group 2 (本人確認必要型) needs a My Number card signature online: the demo has no
        # card, so its online applications go to group-1 procedures.
        group_1 = [p for p in procedures if p["group"] == 1] or procedures
        for _ in range(count):
            channel = rng.choices(channels, weights)[0]
            p = rng.choice(group_1 if channel is Channel.ONLINE else procedures)
            if channel is not Channel.ONLINE:
                headers = staff_headers
            elif applicant_secret:
                citizen = uuid.UUID(int=rng.getrandbits(128))
                token = mint_applicant_token(citizen, applicant_secret)
                headers = {"Authorization": f"Bearer {token}"}
            else:
                headers = {}
            resp = await http.post(
                "/applications",
                json={
                    "procedure_code": p["code"],
                    "channel": channel.value,
                    "form": form_for(p["form_schema"] or {}),
                },
                headers=headers,
            )
            if resp.status_code == 201:
                accepted += 1
            else:
                refused += 1
            progress(1)
    return accepted, refused
