"""The applications process killed around the outbox relay's publish loses no event and
publishes none twice.

``CITYHALL_FAULT_KILL_BEFORE_PUBLISH=1`` makes the outbox relay SIGKILL its own process right
after it has read the committed rows and before it publishes them: the state change and its
outbox row are in PostgreSQL, nothing is in JetStream. A restarted process publishes the row.

``CITYHALL_FAULT_KILL_AFTER_PUBLISH=1`` kills it after JetStream's PubAck and before the row is
marked published: the restarted relay publishes the row again under the same ``Nats-Msg-Id``,
JetStream drops the copy (duplicate window) and answers with the first copy's sequence, which
the row records.
"""

from __future__ import annotations

import json
import signal

import asyncpg
import httpx
import nats.js.errors
import pytest
from nats.js import JetStreamContext

from cityhall.embedded import free_port
from contracts.subjects import APPLICATIONS
from tests.e2e.helpers import Processes, Spawned, clean_env, is_ready, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


async def test_killed_between_commit_and_publish_loses_no_event(
    nats_url: str,
    database_url: str,
    namespace: str,
    db: asyncpg.Connection,
    js: JetStreamContext,
    processes: Processes,
) -> None:
    await _crash_and_restart(nats_url, database_url, namespace, db, js, processes, "BEFORE")


async def test_killed_between_the_puback_and_marking_the_row_publishes_once(
    nats_url: str,
    database_url: str,
    namespace: str,
    db: asyncpg.Connection,
    js: JetStreamContext,
    processes: Processes,
) -> None:
    await _crash_and_restart(nats_url, database_url, namespace, db, js, processes, "AFTER")


async def _crash_and_restart(
    nats_url: str,
    database_url: str,
    namespace: str,
    db: asyncpg.Connection,
    js: JetStreamContext,
    processes: Processes,
    when: str,
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    stream = APPLICATIONS.stream_name(namespace)
    env = clean_env(
        NATS_URL=nats_url,
        APPLICATIONS_DATABASE_URL=database_url,
        CITYHALL_NAMESPACE=namespace,
        HTTP_PORT=str(port),
    )

    async def start(http: httpx.AsyncClient, **extra: str) -> Spawned:
        proc = processes.cityhall("applications", "serve", "applications", env={**env, **extra})

        async def ready() -> bool:
            assert proc.returncode is None, f"exited with {proc.returncode}\n{proc.output()}"
            return await is_ready(http, url)

        await wait_until(ready, timeout=30, interval=0.1, message=proc.output)
        return proc

    async def stream_messages() -> int:
        return (await js.stream_info(stream)).state.messages

    async def outbox_rows() -> list[asyncpg.Record]:
        outbox = f'"{namespace}_applications".outbox'
        rows: list[asyncpg.Record] = await db.fetch(
            f"SELECT event_id::text, published_at, stream_seq FROM {outbox}"
        )
        return rows

    async with httpx.AsyncClient(timeout=5.0) as http:
        # -- commit, then the relay kills its own process before publishing -------------------
        crashing = await start(http, **{f"CITYHALL_FAULT_KILL_{when}_PUBLISH": "1"})
        # A fee-free procedure: one state change, one event (a fee would add its request).
        body = {"procedure_code": "SHIMIN_NO_KOE", "form": {"subject": "道路", "body": "穴"}}
        try:
            resp = await http.post(f"{url}/applications", json=body)
        except httpx.TransportError:
            # The relay, woken by the commit's NOTIFY, may kill the process before the 201 is
            # written: the client then hears nothing, but the commit happened (checked below).
            application_id = None
        else:
            assert resp.status_code == 201, resp.text
            application_id = resp.json()["id"]

        code = await crashing.wait(10)
        assert code == -signal.SIGKILL, crashing.output()

        # before: nothing reached JetStream; after: the event did, but its row does not know
        assert await stream_messages() == (0 if when == "BEFORE" else 1)
        rows = await outbox_rows()
        assert len(rows) == 1, rows
        event_id = rows[0]["event_id"]
        assert rows[0]["published_at"] is None
        assert rows[0]["stream_seq"] is None

        # -- restarted without the fault: the waiting row is published, exactly once ----------
        restarted = await start(http)

        async def published() -> bool:
            return await stream_messages() >= 1

        await wait_until(published, timeout=10, interval=0.1, message=restarted.output)

        async def marked() -> asyncpg.Record | None:
            rows = await outbox_rows()
            return rows[0] if rows and rows[0]["published_at"] is not None else None

        row = await wait_until(marked, timeout=5, interval=0.1, message=restarted.output)
        assert row["event_id"] == event_id
        assert row["stream_seq"] == 1

        assert await stream_messages() == 1
        msg = await js.get_msg(stream, seq=1)
        assert msg.headers is not None
        assert msg.headers["ce-id"] == event_id
        assert msg.headers["Nats-Msg-Id"] == event_id
        published_id = json.loads(msg.data or b"")["application_id"]
        assert application_id in (None, published_id)
        committed = await db.fetchval(
            f'SELECT count(*) FROM "{namespace}_applications".applications WHERE id = $1::uuid',
            published_id,
        )
        assert committed == 1
        with pytest.raises(nats.js.errors.NotFoundError):
            await js.get_msg(stream, seq=2)

        # -- SIGTERM: a clean stop -------------------------------------------------------------
        restarted.signal(signal.SIGTERM)
        code = await restarted.wait(30)
        assert code == 0, restarted.output()
