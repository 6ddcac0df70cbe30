"""`cityhall up`: the payment-provider simulator as a sidecar, and the shared webhook secret."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import asyncpg
from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from cityhall.embedded import free_port
from cityhall.natsauth import BusUser
from cityhall.stack import LocalExtras, Sidecar, local_secret
from services.runtime.settings import DEFAULT_PORTS


class LocalPaymentsSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    provider_port: int | None = Field(
        default=None, validation_alias=AliasChoices("CITYHALL_PROVIDER_PORT")
    )
    port_base: int | None = Field(default=None, validation_alias=AliasChoices("CITYHALL_PORT_BASE"))


def nats_users(namespace: str, database_url: str) -> list[BusUser]:
    """Each terminal with a key in force, allowed its own subjects and replies only (read from
    payments' schema; none before payments first migrated it)."""
    from cityhall.natsauth import terminal_permissions
    from services.payments import store
    from services.runtime.settings import ServiceSettings

    schema = ServiceSettings(
        service="payments", database_url=database_url, namespace=namespace
    ).schema_name

    async def keys() -> list[store.TerminalKey]:
        conn = await asyncpg.connect(database_url, server_settings={"search_path": schema})
        try:
            return await store.terminal_keys_in_force(conn)
        except asyncpg.UndefinedTableError:
            return []
        finally:
            await conn.close()

    users = []
    for key in asyncio.run(keys()):
        publish, subscribe = terminal_permissions(namespace, key.facility_code, key.terminal_id)
        users.append(BusUser(key.terminal_id, key.public_key, publish, subscribe))
    return users


def prepare(home: Path) -> LocalExtras:
    settings = LocalPaymentsSettings()
    payments_port = (
        DEFAULT_PORTS["payments"] if settings.port_base is None else settings.port_base + 1
    )
    provider_port = settings.provider_port or (8090 if settings.port_base is None else free_port())
    secret = local_secret(home / "payments" / "provider.secret")
    provider_url = f"http://127.0.0.1:{provider_port}"
    return LocalExtras(
        env={"PAYMENT_PROVIDER_SECRET": secret, "PAYMENT_PROVIDER_URL": provider_url},
        sidecars=[
            Sidecar(
                name="payment-provider",
                argv=[
                    sys.executable,
                    "-m",
                    "services.payments.provider_sim",
                    "--port",
                    str(provider_port),
                ],
                env={
                    "PAYMENT_PROVIDER_SECRET": secret,
                    "PAYMENTS_WEBHOOK_URL": f"http://127.0.0.1:{payments_port}/webhooks/provider",
                },
                ready_port=provider_port,
            )
        ],
        urls={"payment provider (simulator)": provider_url},
    )
