"""NATS permissions, tried against by every service's own user on a real nats-server with
the users ``cityhall up`` gives its embedded server (``cityhall.stack.service_nats_user``):

* only payments publishes payment events, only applications applications' events, only
  notifications notifications' events;
* nobody but a terminal publishes on the terminals' subjects (terminals themselves are tried
  against in ``tests/integration/payments/test_nats_auth.py``);
* reporting publishes no business event at all;
* no service deletes or purges a stream, or deletes a business event from one.

The server's own log is the witness (a "Publish Violation" per refused subject), and the
streams are checked to hold none of the refused messages.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NATS
from nats.js.errors import APIError, NoStreamResponseError

from cityhall.embedded import EmbeddedNats, authorization_config, free_port
from cityhall.stack import ADMIN_NATS_USER, admin_nats_user, service_nats_user
from contracts.subjects import APPLICATIONS, NOTIFICATIONS, PAYMENTS, STREAMS
from services.runtime.streams import StreamSettings, provision_streams
from tests.integration.helpers import wait_for

SERVICES = ("applications", "payments", "notifications", "reporting")
BUSINESS = {
    "applications": "applications.application.submitted.v1",
    "payments": "payments.payment.captured.v1",
    "notifications": "notifications.notification.sent.v1",
    "terminals": "terminals.shiminka.shiminka-t01.tx.v1",
}


def password(user: str) -> str:
    return f"{user}-secret-for-tests"


@pytest.fixture
def server(tmp_path: Path, namespace: str) -> Iterator[EmbeddedNats]:
    users = [service_nats_user(namespace, s, password(s)) for s in SERVICES]
    users.append(admin_nats_user(password("admin")))
    srv = EmbeddedNats(
        tmp_path / "nats", port=free_port(), extra_config=authorization_config(users)
    )
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
async def admin(server: EmbeddedNats, namespace: str) -> AsyncIterator[NATS]:
    nc = await nats.connect(server.url, user=ADMIN_NATS_USER, password=password("admin"))
    await provision_streams(nc.jetstream(), StreamSettings(namespace=namespace), STREAMS)
    try:
        yield nc
    finally:
        await nc.close()


def violations(server: EmbeddedNats, user: str) -> list[str]:
    found = []
    for line in server.log_file.read_text(errors="replace").splitlines():
        if f'"$G/user:{user}"' in line and "Violation" in line:
            found.append(line.split(f'"$G/user:{user}" - ', 1)[1].strip())
    return found


async def stored(admin: NATS, namespace: str) -> int:
    js = admin.jetstream()
    return sum([(await js.stream_info(d.stream_name(namespace))).state.messages for d in STREAMS])


@pytest.mark.parametrize("service", SERVICES)
async def test_a_service_publishes_only_its_own_business_events(
    service: str, server: EmbeddedNats, admin: NATS, namespace: str
) -> None:
    nc = await nats.connect(server.url, user=service, password=password(service))
    js = nc.jetstream(timeout=0.5)
    foreign = {owner: s for owner, s in BUSINESS.items() if owner != service}
    try:
        for subject in foreign.values():
            with pytest.raises(
                (
                    nats.errors.TimeoutError,
                    nats.errors.NoRespondersError,
                    NoStreamResponseError,
                    APIError,
                )
            ):
                await js.publish(f"{namespace}.{subject}", b"{}")
        own = BUSINESS.get(service)
        if own is not None:  # the control: its own event is accepted
            ack = await js.publish(f"{namespace}.{own}", b"{}")
            assert ack.seq == 1
    finally:
        await nc.close()

    async def refused() -> set[str]:
        return {v for v in violations(server, service) if "Publish Violation" in v}

    expected = {f'Publish Violation - Subject "{namespace}.{s}"' for s in foreign.values()}
    assert await wait_for(lambda: _superset(refused, expected)) is True
    assert await stored(admin, namespace) == (0 if service == "reporting" else 1)


async def test_reporting_can_publish_no_business_event_at_all(
    server: EmbeddedNats, admin: NATS, namespace: str
) -> None:
    nc = await nats.connect(server.url, user="reporting", password=password("reporting"))
    try:
        for decl in (APPLICATIONS, PAYMENTS, NOTIFICATIONS):
            for pattern in decl.subjects:
                await nc.publish(f"{namespace}.{pattern.replace('>', 'x.v1')}", b"{}")
        await nc.flush()
    finally:
        await nc.close()

    async def refused() -> int:
        return len([v for v in violations(server, "reporting") if "Publish Violation" in v])

    wanted = sum(len(d.subjects) for d in (APPLICATIONS, PAYMENTS, NOTIFICATIONS))
    assert await wait_for(lambda: _at_least(refused, wanted)) is True
    assert await stored(admin, namespace) == 0


@pytest.mark.parametrize("service", SERVICES)
async def test_no_service_can_delete_or_purge_a_stream_or_delete_a_business_event(
    service: str, server: EmbeddedNats, admin: NATS, namespace: str
) -> None:
    payments = PAYMENTS.stream_name(namespace)
    ack = await admin.jetstream().publish(f"{namespace}.{BUSINESS['payments']}", b"{}")
    nc = await nats.connect(server.url, user=service, password=password(service))
    js = nc.jetstream(timeout=0.5)
    try:
        # The JetStream API requests behind delete_msg, purge_stream and delete_stream.
        for api, body in (("MSG.DELETE", {"seq": ack.seq}), ("PURGE", {}), ("DELETE", {})):
            with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
                await nc.request(
                    f"$JS.API.STREAM.{api}.{payments}", json.dumps(body).encode(), timeout=0.5
                )
        # Still allowed: reading the stream's state (the reconciler does).
        assert (await js.stream_info(payments)).state.messages == 1
    finally:
        await nc.close()
    assert (await admin.jetstream().stream_info(payments)).state.messages == 1
    refused = violations(server, service)
    for api in ("MSG.DELETE", "PURGE", "DELETE"):
        assert any(f'"$JS.API.STREAM.{api}.{payments}"' in v for v in refused), refused


async def _superset(found, expected):  # type: ignore[no-untyped-def]
    return (await found()) >= expected


async def _at_least(found, n):  # type: ignore[no-untyped-def]
    return (await found()) >= n
