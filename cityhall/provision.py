"""The operator's provisioning step: every stream and every service's durable consumers.

Run by `cityhall up` before the services start, by `cityhall provision` and by the Kubernetes
provisioning Job (deploy/k8s). Services never create or change streams or consumers: their
NATS identities may not (cityhall/natsauth.py).
"""

from __future__ import annotations

from pathlib import Path

import nats
from nats.aio.client import Client as NatsClient

from services.registry import SERVICE_NAMES, definition
from services.runtime.streams import StreamSettings, provision


async def operator_connection(nats_url: str, seed_file: Path | None) -> NatsClient:
    """A connection as the operator: with its nkey seed when the server requires one."""
    options = {"nkeys_seed": str(seed_file)} if seed_file is not None else {}
    return await nats.connect(
        nats_url.split(","), name="cityhall-operator", connect_timeout=5, **options
    )


def all_durables() -> list:  # type: ignore[type-arg]
    return [decl for s in SERVICE_NAMES for decl in definition(s).bus.durables]


async def provision_all(
    nats_url: str, namespace: str, seed_file: Path | None, replicas: int = 1
) -> list[str]:
    """Create or update every stream and durable consumer of ``namespace``; what was done."""
    nc = await operator_connection(nats_url, seed_file)
    try:
        return await provision(
            nc.jetstream(), StreamSettings(namespace=namespace, replicas=replicas), all_durables()
        )
    finally:
        await nc.close()
