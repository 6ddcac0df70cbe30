"""No full card number and no My Number (個人番号) anywhere in streams, tables or logs.

Runs after every other test (``tests/conftest.py`` orders it last). Every test's rows and
messages were scanned as its fixtures removed them, every e2e process's logs as it stopped,
every log record of this process as it was written (``tests.security.scanner``); this test
reads the verdict. So that it never passes on nothing, it first sends a card number and a My
Number through the real paths itself, with payments and applications running as processes:

* a terminal publishes two captures carrying a full PAN (in the item text; as the card
  token): payments must dead-letter them masked and erase the originals;
* a citizen files a group-2 application signed with a certificate whose subject carries the My
  Number, and a counter clerk types the number into a form: applications must accept the
  first without keeping the number, refuse the second.

Then it scans what this test left (its own teardown comes after the verdict) and the session's
server logs, and proves the plumbing on canaries: a planted row, message and log line are found.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from nats.js import JetStreamContext

from cityhall.embedded import free_port
from contracts.applications import ApplicationSubmittedV1
from contracts.subjects import APPLICATIONS, STREAMS, TERMINALS
from services.runtime.dlq import list_dead_letters
from tests.e2e import conftest as e2e_conftest
from tests.e2e.helpers import Processes, clean_env, is_ready, wait_until
from tests.integration.applications.jpki import CardCA, challenge_for
from tests.integration.payments.helpers import terminal_publishes, transaction
from tests.security.scanner import SENT_CARD_NUMBERS, SENT_MY_NUMBERS, AtRestScan
from tests.tokens import ENV_VARS, applicant

processes = e2e_conftest.processes  # the e2e suite's process runner (a fixture, by name)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

PAN_IN_TEXT, PAN_AS_TOKEN = SENT_CARD_NUMBERS[1], SENT_CARD_NUMBERS[2]
MY_NUMBER = SENT_MY_NUMBERS[0]
STAFF_TOKEN = "at-rest-counter-staff-token"
STAFF = {"Authorization": f"Bearer {STAFF_TOKEN}"}
KOSEKI: dict[str, Any] = {
    "procedure_code": "KOSEKI_TOHON",
    "channel": "online",
    "form": {"honseki": "郡山市朝日一丁目23番", "hittosha": "郡山太郎"},
}


@pytest.fixture
async def stack(
    nats_url: str,
    database_url: str,
    namespace: str,
    db: asyncpg.Connection,
    js: JetStreamContext,
    processes: Processes,
    tmp_path: Path,
) -> AsyncIterator[tuple[dict[str, httpx.AsyncClient], CardCA]]:
    """Payments and applications as processes (`cityhall serve`) on the session's servers."""
    ca = CardCA("At-rest J-LIS Signature CA")
    (tmp_path / "anchors.pem").write_bytes(ca.pem())
    (tmp_path / "jpki.crl").write_bytes(ca.crl())
    extra = {
        "applications": {
            "APPLICATIONS_STAFF_TOKENS": f"counter01={STAFF_TOKEN}",
            "APPLICATIONS_JPKI_TRUST_ANCHORS": str(tmp_path / "anchors.pem"),
            "APPLICATIONS_JPKI_CRL": str(tmp_path / "jpki.crl"),
            **ENV_VARS,
        },
        "payments": {},
    }
    clients: dict[str, httpx.AsyncClient] = {}
    procs = {}
    for name, values in extra.items():
        port = free_port()
        env = clean_env(
            NATS_URL=nats_url,
            DATABASE_URL=database_url,
            CITYHALL_NAMESPACE=namespace,
            HTTP_PORT=str(port),
            **values,
        )
        procs[name] = processes.cityhall(name, "serve", name, env=env)
        clients[name] = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10.0)
    try:
        for name, proc in procs.items():
            http = clients[name]

            async def ready(proc: Any = proc, http: httpx.AsyncClient = http) -> bool:
                assert proc.returncode is None, f"exited with {proc.returncode}\n{proc.output()}"
                return await is_ready(http, str(http.base_url))

            await wait_until(ready, timeout=30, message=proc.output)
        yield clients, ca
    finally:
        for client in clients.values():
            await client.aclose()


async def drive_a_card_number_and_a_my_number_through(
    clients: dict[str, httpx.AsyncClient], ca: CardCA, js: JetStreamContext, namespace: str
) -> None:
    # Payments: a terminal sends full card numbers; both captures are refused to the DLQ.
    pan_in_item = transaction("at-rest-t01", "AR-000001", method="credit", brand="Visa")
    pan_in_item |= {"item": f"card {PAN_IN_TEXT}", "card": {"token": "tok_abcdefgh"}}
    pan_as_token = transaction("at-rest-t01", "AR-000002", method="credit", brand="JCB")
    pan_as_token |= {"card": {"token": PAN_AS_TOKEN, "brand": "JCB", "last4": "0000"}}
    for tx in (pan_in_item, pan_as_token):
        await terminal_publishes(js, namespace, tx)

    async def refused() -> list[Any]:
        letters = await list_dead_letters(js, namespace, consumer="payments_terminals")
        pan = [x for x in letters if "full card number (PAN) is refused" in x.reason]
        return pan if len(pan) == 2 else []

    await wait_until(refused, timeout=20)
    assert (await js.stream_info(TERMINALS.stream_name(namespace))).state.messages == 0

    # Applications: a certificate carrying the My Number signs an accepted application ...
    http = clients["applications"]
    signer = ca.issue(extra=[x509.NameAttribute(NameOID.SERIAL_NUMBER, MY_NUMBER)])
    citizen = applicant()
    body = signer.sign(KOSEKI, await challenge_for(http, citizen))
    accepted = await http.post("/applications", json=body, headers=citizen)
    assert accepted.status_code == 201, accepted.text
    app_id = accepted.json()["id"]
    # ... and the number typed into a form at the counter is refused, naming the field.
    typed = KOSEKI | {"channel": "counter", "form": KOSEKI["form"] | {"hittosha": MY_NUMBER}}
    resp = await http.post("/applications", json=typed, headers=STAFF)
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"][0]["loc"] == ["body", "form", "hittosha"]

    async def published() -> bool:
        stream = APPLICATIONS.stream_name(namespace)
        for seq in range(1, (await js.stream_info(stream)).state.last_seq + 1):
            msg = await js.get_msg(stream, seq=seq)
            headers = msg.headers or {}
            if headers.get("ce-type") == ApplicationSubmittedV1.event_type:
                return json.loads(msg.data or b"{}")["application_id"] == app_id
        return False

    await wait_until(published, timeout=15)


async def scan_canaries(
    db: asyncpg.Connection, js: JetStreamContext, namespace: str, logs: Path
) -> None:
    """The scans find what is planted where they look: a row, a message's header, a log line
    (into a registry of their own, outside the test's namespace, removed afterwards)."""
    canary = AtRestScan(current_test="canary")
    schema, stream = f"{namespace}canary", f"CANARY_{namespace.upper()}"
    planted = "4012888888881881"  # a Visa test number
    await db.execute(f'CREATE SCHEMA "{schema}"; CREATE TABLE "{schema}".t (note text)')
    try:
        await db.execute(f"""INSERT INTO "{schema}".t VALUES ('card {planted}')""")
        await canary.scan_schemas(db, schema)
    finally:
        await db.execute(f'DROP SCHEMA "{schema}" CASCADE')
    await js.add_stream(name=stream, subjects=[f"canary.{namespace}"])
    try:
        await js.publish(f"canary.{namespace}", b"{}", headers={"x-note": f"my_number {MY_NUMBER}"})
        await canary.scan_streams(js, [stream])
    finally:
        await js.delete_stream(stream)
    (logs / "canary.log").write_text('{"kojin_bango": "111111111118"}\n')
    canary.scan_log_files(logs)
    (logs / "canary.log").unlink()

    places = sorted(f.where.split(" ")[0].split(".")[0] for f in canary.findings)
    assert places == sorted([schema, "stream", "log"]), canary.summary()
    assert planted not in "".join(str(f) for f in canary.findings)  # masked


async def test_no_card_number_and_no_my_number_at_rest(
    at_rest: AtRestScan,
    stack: tuple[dict[str, httpx.AsyncClient], CardCA],
    db: asyncpg.Connection,
    js: JetStreamContext,
    namespace: str,
    processes: Processes,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    clients, ca = stack
    await drive_a_card_number_and_a_my_number_through(clients, ca, js, namespace)
    processes.stop_all()  # their logs are complete

    # This test's own evidence (its fixtures' teardown would scan it after the verdict).
    await at_rest.scan_schemas(db, f"{namespace}\\_%")
    names = [s.stream_name(namespace) for s in STREAMS]
    await at_rest.scan_streams(js, names)
    at_rest.scan_log_files(tmp_path)
    # Whatever else the session left in its temp dirs: embedded servers' logs, e2e runs'.
    at_rest.scan_log_files(tmp_path_factory.getbasetemp())
    await scan_canaries(db, js, namespace, tmp_path_factory.mktemp("canary"))

    print(f"\nat-rest scan: {at_rest.summary()}")
    for error in at_rest.errors:
        print(f"  scan error: {error}")
    assert not at_rest.findings, "\n".join(str(f) for f in at_rest.findings[:50])
    figures = {
        "rows": at_rest.rows,
        "messages": at_rest.messages,  # at least 2 dead letters and 2 application events
        "log files": at_rest.log_files,
        "log bytes": at_rest.log_bytes,
    }
    minimum = {"rows": 1, "messages": 4, "log files": 1, "log bytes": 1}
    assert {k: v >= minimum[k] for k, v in figures.items()} == dict.fromkeys(figures, True), (
        at_rest.summary()
    )
