"""`cityhall up`: the payment-provider simulator as a sidecar, and the shared webhook secret."""

from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from cityhall.embedded import NatsUser, free_port
from cityhall.stack import LocalExtras, Sidecar
from contracts.subjects import absolute
from services.runtime.settings import DEFAULT_PORTS


class LocalPaymentsSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    provider_port: int | None = Field(
        default=None, validation_alias=AliasChoices("CITYHALL_PROVIDER_PORT")
    )
    port_base: int | None = Field(default=None, validation_alias=AliasChoices("CITYHALL_PORT_BASE"))


def _secret(home: Path) -> str:
    """The simulator's webhook secret, made once and kept under the stack home."""
    path = home / "payments" / "provider.secret"
    if path.is_file():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    path.write_text(value)
    path.chmod(0o600)
    return value


def terminal_nats_user(namespace: str, credentials: dict[str, str]) -> NatsUser:
    """A terminal may publish on its own subjects only, and read only its own replies."""
    own = [credentials["subject"]]
    if "settlement_subject" in credentials:
        own.append(credentials["settlement_subject"])
    return NatsUser(
        user=credentials["nats_user"],
        password=credentials["nats_password"],
        publish=tuple(absolute(namespace, s) for s in own),
        subscribe=(f"{credentials['inbox_prefix']}.>",),
    )


def terminal_nats_users(home: Path, namespace: str) -> list[NatsUser]:
    """The users of every terminal registered under the home (``terminals/*.json``)."""
    users = []
    for path in sorted((home / "terminals").glob("*.json")):
        users.append(terminal_nats_user(namespace, json.loads(path.read_text())))
    return users


def prepare(home: Path) -> LocalExtras:
    settings = LocalPaymentsSettings()
    payments_port = (
        DEFAULT_PORTS["payments"] if settings.port_base is None else settings.port_base + 1
    )
    provider_port = settings.provider_port or (8090 if settings.port_base is None else free_port())
    secret = _secret(home)
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
        nats_users=lambda namespace: terminal_nats_users(home, namespace),
    )
