"""Who may do what on the bus: NATS nkey identities and their allow-lists.

Every client of the bus (each service, the operator, each payment terminal) is an **nkey
user**: it holds its seed (a file of its own, mode 0600) and signs the server's challenge; the
server's configuration holds only public keys and the subjects each may use, so it holds no
secret at all. Revoking or rotating a terminal rewrites that list and makes the server reload
it: the revoked key's connection is closed, nobody else's (docs/security.md).

Why nkey users and not decentralized JWT auth (operator/account/user JWTs): the Python library
for NATS JWTs (nats-jwt 0.2.2, "not well-tested" by its own README) writes an account's signing
keys as a map (``{"A...": null}``) that nats-server 2.15 refuses ("invalid account JWT"), and
writing JWT claims ourselves would be a home-made nsc. nkey users give every property this
platform needs (an identity per device, no shared secret on disk, revocation without restart)
with the NATS team's own ``nkeys`` package, which nats-py and FastStream read directly.

Permissions are allow-lists derived from each service's ``BusAccess`` (services/*/app.py):
nothing a service did not declare is allowed, and nothing is denied by a list that could miss a
new JetStream API.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import nkeys

from cityhall.files import write_private
from contracts.payments import terminal_settlement_subject, terminal_subject
from contracts.subjects import absolute, dlq_subject
from services.payments.store.terminals import TerminalKey, terminal_keys_in_force
from services.registry import SERVICE_NAMES, definition
from services.runtime.service import ServiceDefinition
from services.runtime.settings import ServiceSettings

OPERATOR = "operator"
"""The operator's identity (`cityhall provision`, `dlq`, `reporting rebuild`, `demo`): all."""


@dataclass(frozen=True)
class BusUser:
    """One nkey user of the server: whose key, and what it may publish and subscribe to."""

    name: str
    public_key: str
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]


def service_permissions(
    defn: ServiceDefinition, namespace: str
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(publish, subscribe) allow-lists of a service's identity.

    * its own events (its relay's publish) and, for the outbox reconciliation, its own
      stream's info and direct reads;
    * for each of its durable consumers: the consumer's info, its next batch, its acks and its
      dead letters; nothing that creates, changes or deletes a consumer or a stream;
    * the info of the streams it watches, the deletion of a message from those it erases from;
    * replies on its own inbox prefix only (``_INBOX_<service>``).
    """
    bus = defn.bus
    publish: list[str] = []
    if bus.publishes is not None:
        stream = bus.publishes.stream_name(namespace)
        publish += bus.publishes.absolute_subjects(namespace)
        publish += [f"$JS.API.STREAM.INFO.{stream}", f"$JS.API.DIRECT.GET.{stream}"]
    for decl in bus.durables:
        stream = decl.stream.stream_name(namespace)
        publish += [
            f"$JS.API.CONSUMER.INFO.{stream}.{decl.durable}",
            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{decl.durable}",
            f"$JS.ACK.{stream}.{decl.durable}.>",
            absolute(namespace, dlq_subject(decl.durable)),
        ]
    publish += [f"$JS.API.STREAM.INFO.{s.stream_name(namespace)}" for s in bus.watches]
    publish += [f"$JS.API.STREAM.MSG.DELETE.{s.stream_name(namespace)}" for s in bus.erases_from]
    return tuple(dict.fromkeys(publish)), (f"_INBOX_{defn.name}.>",)


def terminal_permissions(
    namespace: str, facility_code: str, terminal_id: str
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A terminal publishes its own transactions and settlements and reads its own replies."""
    return (
        (
            absolute(namespace, terminal_subject(facility_code, terminal_id)),
            absolute(namespace, terminal_settlement_subject(facility_code, terminal_id)),
        ),
        (f"_INBOX_{terminal_id}.>",),
    )


def authorization_config(users: Sequence[BusUser]) -> str:
    """The nats-server ``authorization`` block: nkey users with allow-lists (all else denied)."""
    lines = ["authorization {", "  users = ["]
    for u in users:
        lines.append(
            f"    # {u.name}\n"
            f"    {{nkey: {json.dumps(u.public_key)}, permissions: {{"
            f"publish: {{allow: {json.dumps(list(u.publish))}}}, "
            f"subscribe: {{allow: {json.dumps(list(u.subscribe))}}}}}}}"
        )
    lines += ["  ]", "}", ""]
    return "\n".join(lines)


# --- seeds ----------------------------------------------------------------------------------


def new_seed() -> bytes:
    """A fresh user nkey seed (``SU…``)."""
    seed: bytes = nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER)
    return seed


def public_key(seed: bytes) -> str:
    key: bytes = nkeys.from_seed(bytearray(seed)).public_key
    return key.decode()


def ensure_seed_file(path: Path) -> str:
    """The public key of the seed in ``path``, making the seed (0600) the first time."""
    if not path.is_file():
        write_private(path, new_seed().decode() + "\n")
    return public_key(path.read_bytes().strip())


@dataclass(frozen=True)
class KeyDirectory:
    """A folder of seed files, one per identity (``<name>.nk``): the local stack's
    ``.cityhall/nats/keys`` or, for a cluster, the operator's own safe place from which each
    service's seed becomes its Kubernetes secret (docs/deploy.md)."""

    path: Path

    def seed_file(self, name: str) -> Path:
        return self.path / f"{name}.nk"

    def ensure(self, names: Iterable[str]) -> dict[str, str]:
        """Public key by name, making the missing seeds."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.path.chmod(0o700)
        return {name: ensure_seed_file(self.seed_file(name)) for name in names}


def platform_users(
    namespace: str,
    definitions: Sequence[ServiceDefinition],
    keys: dict[str, str],
) -> list[BusUser]:
    """The services' and the operator's users, from their public keys by name."""
    users = []
    for defn in definitions:
        publish, subscribe = service_permissions(defn, namespace)
        users.append(BusUser(defn.name, keys[defn.name], publish, subscribe))
    users.append(BusUser(OPERATOR, keys[OPERATOR], (">",), (">",)))
    return users


def terminal_users(namespace: str, database_url: str) -> list[BusUser]:
    """Each payment terminal with a key in force, allowed its own subjects and replies only
    (read from payments' schema; none before payments first migrated it)."""
    schema = ServiceSettings(
        service="payments", database_url=database_url, namespace=namespace
    ).schema_name

    async def keys() -> list[TerminalKey]:
        conn = await asyncpg.connect(database_url, server_settings={"search_path": schema})
        try:
            return await terminal_keys_in_force(conn)
        except asyncpg.UndefinedTableError:
            return []
        finally:
            await conn.close()

    users = []
    for key in asyncio.run(keys()):
        publish, subscribe = terminal_permissions(namespace, key.facility_code, key.terminal_id)
        users.append(BusUser(key.terminal_id, key.public_key, publish, subscribe))
    return users


def bus_users(keys: KeyDirectory, namespace: str, database_urls: dict[str, str]) -> list[BusUser]:
    """Everyone the local NATS admits: the services, the operator, and each payment terminal
    with a key in force (when payments' database is given)."""
    public = keys.ensure([*SERVICE_NAMES, OPERATOR])
    users = platform_users(namespace, [definition(s) for s in SERVICE_NAMES], public)
    if "payments" in database_urls:
        users.extend(terminal_users(namespace, database_urls["payments"]))
    return users
