"""`cityhall up`: the payment-provider simulator as a sidecar, and the shared webhook secret."""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from cityhall.embedded import free_port
from cityhall.local import LocalExtras, Sidecar, local_secret
from services.runtime.settings import DEFAULT_PORTS


class LocalPaymentsSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    provider_port: int | None = Field(
        default=None, validation_alias=AliasChoices("CITYHALL_PROVIDER_PORT")
    )
    port_base: int | None = Field(default=None, validation_alias=AliasChoices("CITYHALL_PORT_BASE"))


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
