"""Benchmark: a burst of events becomes mail at the SMTP server, paced by the rate limit.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test NATS_URL=nats://127.0.0.1:4222 \
        .venv/bin/python bench/notifications_burst.py [--events 10000] [--rate 500]

The notifications service runs in-process on the given servers, with a real SMTP server
(aiosmtpd's Maildir server, in its own process) on a free port. ``--events`` ApplicationSubmitted
events (for ``--applicants`` citizens with a contact) are published at once, then the clock
measures:

1. **enqueue**: until every event has its notification row (consumer: inbox + rules +
   rendering, one transaction per batch);
2. **delivery**: until every notification is sent, and the highest number of mails the SMTP
   server accepted in any one second, against ``--rate`` (NOTIFY_EMAIL_RATE_PER_S; the
   bucket holds a tenth of a second's worth).

It prints the figures and checks that every mail arrived exactly once. Everything it creates
(schema, streams) is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import nats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cityhall.embedded import free_port, port_is_open  # noqa: E402
from cityhall.provision import provision_all  # noqa: E402
from contracts.applications import ApplicationSubmittedV1, Channel  # noqa: E402
from contracts.envelope import Envelope  # noqa: E402
from contracts.subjects import absolute  # noqa: E402
from services.registry import definition  # noqa: E402
from services.runtime.server import build_app  # noqa: E402
from services.runtime.settings import ServiceSettings  # noqa: E402

DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
NATS_URL = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
BENCH_STAFF_TOKEN = "bench-notifications-staff-token"


class MaildirSink:
    """aiosmtpd's own server with its Maildir handler, in its own process (what `cityhall up`
    runs): an SMTP server inside the benchmark's process would compete for its GIL."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder = folder
        self.port = port
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aiosmtpd",
                "--nosetuid",
                "--listen",
                f"127.0.0.1:{port}",
                "--class",
                "aiosmtpd.handlers.Mailbox",
                str(folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)

    def arrivals(self) -> tuple[collections.Counter[int], collections.Counter[str]]:
        """Mails per arrival second (Maildir names start with it) and per notification id."""
        seconds: collections.Counter[int] = collections.Counter()
        ids: collections.Counter[str] = collections.Counter()
        for path in (self.folder / "new").iterdir():
            seconds[int(path.name.split(".", 1)[0])] += 1
            for line in path.read_bytes().splitlines():
                if line.lower().startswith(b"x-cityhall-notification-id:"):
                    ids[line.split(b":", 1)[1].strip().decode()] += 1
                    break
        return seconds, ids


async def wait(predicate: Any, timeout: float) -> float:
    start = time.monotonic()
    while not await predicate():
        if time.monotonic() - start > timeout:
            raise TimeoutError("benchmark did not finish in time")
        await asyncio.sleep(0.1)
    return time.monotonic()


async def main(args: argparse.Namespace) -> None:
    port = free_port()
    sink = MaildirSink(Path(tempfile.mkdtemp(prefix="notifications-bench-")) / "mail", port)
    deadline = time.monotonic() + 20
    while not port_is_open("127.0.0.1", port):
        if time.monotonic() > deadline:
            raise SystemExit("the SMTP sink did not start")
        await asyncio.sleep(0.05)
    os.environ.update(
        {
            "NOTIFY_SMTP_HOST": "127.0.0.1",
            "NOTIFY_SMTP_PORT": str(port),
            "NOTIFY_EMAIL_RATE_PER_S": str(args.rate),
            "NOTIFY_SENDER_CONCURRENCY": str(args.concurrency),
            "NOTIFY_SENDER_BATCH": str(args.batch),
            # --enqueue-only: the sender polls once an hour, so the consumer runs alone.
            "NOTIFY_SENDER_POLL_S": "3600" if args.enqueue_only else "0.05",
            # Contacts are recorded by a clerk (staff) as fast as the loop goes: no rate limit.
            "NOTIFICATIONS_STAFF_TOKENS": f"bench={BENCH_STAFF_TOKEN}",
            "NOTIFICATIONS_RATE_LIMITS": "false",
        }
    )
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    settings = ServiceSettings(
        service="notifications",
        nats_url=NATS_URL,
        database_url=DATABASE_URL,
        namespace=namespace,
        http_port=free_port(),
        consumer_max_wait_s=0.05,
    )
    await provision_all(settings.nats_url, settings.namespace, None)  # the operator's step
    app = build_app(definition("notifications"), settings)
    runtime = app.state.runtime
    ctx = await runtime.start()
    app.state.ctx = ctx
    nc = await nats.connect(NATS_URL)
    js = nc.jetstream()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://notifications",
            headers={"Authorization": f"Bearer {BENCH_STAFF_TOKEN}"},
        ) as http:
            applicants = [uuid.uuid4() for _ in range(args.applicants)]
            for i, applicant in enumerate(applicants):
                await http.put(f"/contacts/{applicant}", json={"email": f"c{i}@example.jp"})
        subject = absolute(namespace, ApplicationSubmittedV1.subject)
        envelopes = [
            Envelope.new(
                ApplicationSubmittedV1(
                    application_id=uuid.uuid4(),
                    procedure_code="JUMINHYO",
                    channel=Channel.ONLINE,
                    submitted_at=datetime.now(UTC),
                    applicant_id=applicants[i % len(applicants)],
                ),
                source="/cityhall/applications",
            )
            for i in range(args.events)
        ]
        pool: asyncpg.Pool = ctx.pool

        async def count(sql: str) -> int:
            return int(await pool.fetchval(sql))

        started = time.monotonic()
        for i in range(0, len(envelopes), 500):
            chunk = envelopes[i : i + 500]
            await asyncio.gather(
                *(js.publish(subject, e.body(), headers=e.headers()) for e in chunk)
            )
        published = time.monotonic()
        enqueued = await wait(
            lambda: _at_least(count("SELECT count(*) FROM notifications"), args.events),
            timeout=600,
        )
        if args.enqueue_only:
            print(f"events                 {args.events} for {args.applicants} applicants")
            print(
                f"enqueued (rows) after  {enqueued - started:8.2f} s  "
                f"({args.events / (enqueued - started):8.0f} notifications/s), sender paused"
            )
            return
        sent = await wait(
            lambda: _at_least(
                count("SELECT count(*) FROM notifications WHERE status = 'sent'"), args.events
            ),
            timeout=3600,
        )
        await asyncio.sleep(1.0)
        per_second, ids = sink.arrivals()
        busiest = max(per_second.values()) if per_second else 0
        # After the first second the bucket's initial burst is spent: the steady pace.
        first = min(per_second) if per_second else 0
        steady = max((n for sec, n in per_second.items() if sec > first), default=0)
        repeats = sum(1 for n in ids.values() if n > 1)
        print(f"events                 {args.events} for {args.applicants} applicants")
        print(f"published in           {published - started:8.2f} s")
        print(
            f"enqueued (rows) after  {enqueued - started:8.2f} s  "
            f"({args.events / (enqueued - started):8.0f} notifications/s)"
        )
        print(
            f"sent after             {sent - started:8.2f} s  "
            f"({args.events / (sent - started):8.0f} mails/s overall)"
        )
        print(
            f"rate limit             {args.rate:8.0f} mails/s (token bucket, burst {args.rate:.0f})"
        )
        print(f"busiest second at SMTP {busiest:8d} mails (after the first second: {steady})")
        print(
            f"mails at the server    {sum(ids.values())}; distinct {len(ids)}; repeated {repeats}"
        )
        if len(ids) != args.events or repeats:
            raise SystemExit("FAILED: not every notification arrived exactly once")
    finally:
        await nc.close()
        await runtime.stop()
        sink.stop()
        await _clean(namespace)


async def _at_least(value: Any, target: int) -> bool:
    return int(await value) >= target


async def _clean(namespace: str) -> None:
    conn = await asyncpg.connect(DATABASE_URL)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{namespace}_notifications" CASCADE')
    finally:
        await conn.close()
    nc = await nats.connect(NATS_URL)
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            name = info.config.name or ""
            if name.startswith(namespace.upper() + "_"):
                await js.delete_stream(name)
    finally:
        await nc.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--applicants", type=int, default=200)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument(
        "--enqueue-only", action="store_true", help="Measure the consumer alone (no sending)."
    )
    asyncio.run(main(parser.parse_args()))
