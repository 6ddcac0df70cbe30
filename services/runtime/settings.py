"""Settings from the environment, validated once at start-up.

Configuration goes through these objects only; nothing else in cityhall reads ``os.environ``.
A bad or missing value stops the process with one clear line per problem (see
``load_settings``), not with a stack trace from deep inside a driver.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar

from pydantic import (
    AfterValidator,
    AliasChoices,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.subjects import DEFAULT_NAMESPACE

SERVICES = ("applications", "payments", "notifications", "reporting")
DEFAULT_PORTS = {
    "applications": 8001,
    "payments": 8002,
    "notifications": 8003,
    "reporting": 8004,
}

_IDENT = re.compile(r"^[a-z][a-z0-9_]{0,40}$")


def _nats_urls(value: str) -> str:
    for url in value.split(","):
        if not re.match(r"^(nats|tls|ws|wss)://[^\s/]+(:\d+)?/?$", url.strip()):
            raise ValueError("expected nats://host:port (comma-separated for a cluster)")
    return value


def _postgres_url(value: str) -> str:
    if not re.match(r"^postgres(ql)?://", value):
        raise ValueError("expected postgresql://user@host:port/database")
    return value


def _identifier(value: str) -> str:
    if not _IDENT.match(value):
        raise ValueError(
            "use lower-case letters, digits and '_', starting with a letter (at most 41)"
        )
    return value


NatsUrl = Annotated[str, AfterValidator(_nats_urls)]
PostgresUrl = Annotated[str, AfterValidator(_postgres_url)]
Identifier = Annotated[str, AfterValidator(_identifier)]


REQUIRED_IN_PRODUCTION = "required_in_production"
"""``Field(json_schema_extra={REQUIRED_IN_PRODUCTION: True})``: a secret or setting that must
be set when CITYHALL_ENV=production (checked by ``read_settings``)."""


class Environment(BaseSettings):
    """CITYHALL_ENV alone, for ``read_settings``'s production check of any settings class."""

    model_config = SettingsConfigDict(extra="ignore")

    environment: Literal["development", "production"] = Field(
        default="development", validation_alias=AliasChoices("CITYHALL_ENV")
    )


class ServiceSettings(BaseSettings):
    """What every service needs. Environment names are given with each field."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    service: Identifier = Field(description="Which service this process runs.")
    nats_url: NatsUrl = Field(
        default="nats://127.0.0.1:4223",
        validation_alias=AliasChoices("NATS_URL"),
        description="NATS server(s) with JetStream.",
    )
    nats_nkey_file: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("NATS_NKEY_FILE"),
        description="This service's NATS identity: a file (mode 0600) holding its nkey seed "
        "and nothing else. The server knows only the public key and the subjects it allows "
        "(docs/security.md). Required when CITYHALL_ENV=production.",
        json_schema_extra={REQUIRED_IN_PRODUCTION: True},
    )
    database_url: PostgresUrl | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL"),
        description="PostgreSQL for this service; <SERVICE>_DATABASE_URL takes precedence.",
    )
    namespace: Identifier = Field(
        default=DEFAULT_NAMESPACE,
        validation_alias=AliasChoices("CITYHALL_NAMESPACE"),
        description="Prefix of every subject and stream; tests use their own.",
    )
    db_schema: Identifier | None = Field(
        default=None,
        validation_alias=AliasChoices("CITYHALL_DB_SCHEMA"),
        description="PostgreSQL schema this service owns (default: the service name).",
    )
    http_host: str = Field(default="127.0.0.1", validation_alias=AliasChoices("HTTP_HOST"))
    http_port: int | None = Field(
        default=None, ge=1, le=65535, validation_alias=AliasChoices("HTTP_PORT")
    )
    forwarded_allow_ips: str = Field(
        default="127.0.0.1",
        validation_alias=AliasChoices("FORWARDED_ALLOW_IPS"),
        description="Proxies (addresses or networks, comma-separated) whose X-Forwarded-For "
        "gives the client's address; any other peer is the client itself. On a cluster: the "
        "ingress controller's pod network.",
    )
    log_level: str = Field(default="INFO", validation_alias=AliasChoices("LOG_LEVEL"))
    log_format: str = Field(
        default="json",
        pattern="^(json|text)$",
        validation_alias=AliasChoices("LOG_FORMAT"),
    )
    db_pool_min: int = Field(default=1, ge=0, validation_alias=AliasChoices("DB_POOL_MIN"))
    db_pool_max: int = Field(default=10, ge=1, validation_alias=AliasChoices("DB_POOL_MAX"))
    outbox_poll_interval_s: float = Field(
        default=1.0, gt=0, validation_alias=AliasChoices("OUTBOX_POLL_INTERVAL_S")
    )
    outbox_batch_size: int = Field(
        default=500, ge=1, le=10_000, validation_alias=AliasChoices("OUTBOX_BATCH_SIZE")
    )
    outbox_retention_hours: float = Field(
        default=168.0, ge=0, validation_alias=AliasChoices("OUTBOX_RETENTION_HOURS")
    )
    outbox_reconcile_interval_s: float = Field(
        default=300.0,
        ge=0,
        description="How often the outbox reconciliation job compares published rows with "
        "the streams and publishes again what they lost; 0 turns it off.",
        validation_alias=AliasChoices("OUTBOX_RECONCILE_INTERVAL_S"),
    )
    outbox_reconcile_grace_s: float = Field(
        default=300.0,
        ge=0,
        description="A published row is looked up in its stream once it is this old: longer "
        "than NATS's sync_interval (2 min), so a server that loses the tail of its file "
        "store when its machine crashes is caught by the one-by-one look-up.",
        validation_alias=AliasChoices("OUTBOX_RECONCILE_GRACE_S"),
    )
    outbox_relay: bool = Field(
        default=True,
        description="Whether `cityhall serve` runs the service's outbox relay and its "
        "reconciliation job. false: a `cityhall relay <service>` process of its own runs "
        "them, so publishing takes no time from the consumers and requests (the payments "
        "pipeline: docs/benchmarks.md); events wait in the outbox until one does.",
        validation_alias=AliasChoices("OUTBOX_RELAY"),
    )
    gc_tuning: bool = Field(
        default=False,
        description="Opt-in: once `cityhall serve` or `cityhall relay` has started, freeze the "
        "start-up heap (gc.freeze) and collect the young generation per 50,000 tracked "
        "objects instead of Python's 700. What it measured: docs/operations.md.",
        validation_alias=AliasChoices("GC_TUNING"),
    )
    inbox_retention_days: float = Field(
        default=30.0,
        ge=0,
        description="How long a consumer's inbox rows (the event ids it processed) are kept; "
        "0 keeps them for ever. Longer than any redelivery or re-publish of an event "
        "(docs/reliability.md, 'Inbox retention'); the pruning job runs every "
        "INBOX_PRUNE_INTERVAL_S.",
        validation_alias=AliasChoices("INBOX_RETENTION_DAYS"),
    )
    inbox_prune_interval_s: float = Field(
        default=3600.0, gt=0, validation_alias=AliasChoices("INBOX_PRUNE_INTERVAL_S")
    )
    consumer_batch_size: int = Field(
        default=256,
        ge=1,
        le=10_000,
        validation_alias=AliasChoices("CONSUMER_BATCH_SIZE"),
    )
    consumer_max_wait_s: float = Field(
        default=0.05, gt=0, le=30, validation_alias=AliasChoices("CONSUMER_MAX_WAIT_S")
    )
    consumer_max_deliver: int = Field(
        default=5,
        ge=1,
        le=100,
        description="Handler failures (a bug, bad data: not an unavailable database) before "
        "an event is dead-lettered, counted by the runtime (consumer_failures), not by "
        "JetStream's delivery count.",
        validation_alias=AliasChoices("CONSUMER_MAX_DELIVER"),
    )
    consumer_delivery_limit: int = Field(
        default=50,
        ge=1,
        description="Deliveries in all before a message is dead-lettered on arrival: catches "
        "one that crashes its consumer every time (never acked nor NAKed). A database "
        "outage adds at most one delivery per message in hand, whatever its length.",
        validation_alias=AliasChoices("CONSUMER_DELIVERY_LIMIT"),
    )
    consumer_backoff_s: str = Field(
        default="1,5,15,60",
        description="Delay before a failed event comes back, by handler failure (1st, 2nd, "
        "...; the last repeats), comma-separated seconds.",
        validation_alias=AliasChoices("CONSUMER_BACKOFF_S"),
    )
    consumer_outage_probe_s: float = Field(
        default=2.0,
        gt=0,
        description="While the database is unavailable the consumers fetch nothing; it is "
        "probed this often, and they resume when it answers.",
        validation_alias=AliasChoices("CONSUMER_OUTAGE_PROBE_S"),
    )
    otel_service_name: str | None = Field(
        default=None, validation_alias=AliasChoices("OTEL_SERVICE_NAME")
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None, validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_ENDPOINT")
    )
    otel_traces_sampler: str | None = Field(
        default=None,
        validation_alias=AliasChoices("OTEL_TRACES_SAMPLER"),
        description="OpenTelemetry sampler (e.g. parentbased_traceidratio); default: record "
        "and export every span when OTEL_EXPORTER_OTLP_ENDPOINT is set, record none otherwise.",
    )
    fault_kill_before_publish: bool = Field(
        default=False,
        validation_alias=AliasChoices("CITYHALL_FAULT_KILL_BEFORE_PUBLISH"),
        description="Test hook: the outbox relay SIGKILLs its own process before publishing.",
    )
    fault_kill_after_publish: bool = Field(
        default=False,
        validation_alias=AliasChoices("CITYHALL_FAULT_KILL_AFTER_PUBLISH"),
        description="Test hook: the relay SIGKILLs its own process after the PubAck, before "
        "marking the rows published.",
    )

    @model_validator(mode="after")
    def _defaults(self) -> Self:
        if self.db_schema is None:
            self.db_schema = (
                self.service
                if self.namespace == DEFAULT_NAMESPACE
                else f"{self.namespace}_{self.service}"
            )
        if self.http_port is None:
            self.http_port = DEFAULT_PORTS.get(self.service, 8000)
        if self.database_url is None:
            raise ValueError(
                f"DATABASE_URL (or {self.service.upper()}_DATABASE_URL) is required: "
                "postgresql://user@host:port/database"
            )
        return self

    @field_validator("consumer_backoff_s")
    @classmethod
    def _backoff(cls, value: str) -> str:
        try:
            delays = [float(part) for part in value.split(",")]
        except ValueError:
            raise ValueError("expected seconds, comma-separated (1,5,15,60)") from None
        if not delays or any(d < 0 for d in delays):
            raise ValueError("expected seconds >= 0, comma-separated (1,5,15,60)")
        return value

    @property
    def consumer_backoff(self) -> tuple[float, ...]:
        """``CONSUMER_BACKOFF_S`` as seconds."""
        return tuple(float(part) for part in self.consumer_backoff_s.split(","))

    @property
    def nats_inbox_prefix(self) -> str:
        """This service's own reply subjects: the server lets it read these and no others'."""
        return f"_INBOX_{self.service}"

    @property
    def schema_name(self) -> str:
        assert self.db_schema is not None
        return self.db_schema

    @property
    def port(self) -> int:
        assert self.http_port is not None
        return self.http_port

    @property
    def dsn(self) -> str:
        assert self.database_url is not None
        return self.database_url


class SettingsError(SystemExit):
    """Start-up stops here: the message lists every bad setting."""


def load_settings(service: str) -> ServiceSettings:
    """Read a service's settings; raise SettingsError with one line per bad value.

    ``<SERVICE>_DATABASE_URL`` (e.g. ``REPORTING_DATABASE_URL``) overrides ``DATABASE_URL`` so a
    cluster can give each service its own database and credentials.
    """
    import os

    overrides: dict[str, Any] = {"service": service}
    if specific := os.environ.get(f"{service.upper()}_DATABASE_URL"):
        overrides["database_url"] = specific
    return read_settings(ServiceSettings, service, **overrides)


S = TypeVar("S", bound=BaseSettings)

# A value is shown beside its error unless its variable may hold a credential.
_SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|KEY|CREDENTIAL", re.IGNORECASE)


def read_settings(cls: type[S], service: str, /, *, prefix: str | None = None, **values: Any) -> S:
    """``cls`` from the environment (and ``values``); a bad value raises SettingsError, one
    line per problem naming its environment variable, e.g.
    ``REPORTING_ANSWER_CACHE_MB: Input should be greater than or equal to 0 (got '-5')``.
    A value is never shown for a variable whose name says it may be a secret (tokens,
    passwords, keys). ``prefix``: the variables' prefix when it is given at construction
    (``_env_prefix``) rather than in the class's ``model_config``."""
    try:
        found = cls(_env_prefix=prefix, **values) if prefix is not None else cls(**values)  # type: ignore[call-arg]
    except ValidationError as exc:
        env_prefix = prefix if prefix is not None else str(cls.model_config.get("env_prefix") or "")
        lines = [f"cityhall {service}: invalid configuration"]
        for err in exc.errors():
            name = _variable(cls, str(err["loc"][0]), env_prefix) if err["loc"] else env_prefix
            value = err.get("input")
            shown = (
                f" (got {value!r})"
                if isinstance(value, str | int | float) and not _SECRET_NAME.search(name)
                else ""
            )
            lines.append(f"  {name or '*'}: {err['msg'].removeprefix('Value error, ')}{shown}")
        raise SettingsError("\n".join(lines)) from None
    if Environment().environment == "production":
        env_prefix = prefix if prefix is not None else str(cls.model_config.get("env_prefix") or "")
        missing = [
            _variable(cls, name, env_prefix)
            for name, field in cls.model_fields.items()
            if isinstance(field.json_schema_extra, dict)
            and field.json_schema_extra.get(REQUIRED_IN_PRODUCTION)
            and not getattr(found, name)
        ]
        if missing:
            raise SettingsError(
                f"cityhall {service}: CITYHALL_ENV=production and no "
                + ", ".join(missing)
                + ": a production service never runs on a local default or without its secrets"
            )
    return found


def _variable(cls: type[BaseSettings], where: str, prefix: str) -> str:
    """The environment variable of a field named in an error (pydantic names a field by the
    alias it was given under, or by its own name)."""
    field = cls.model_fields.get(where)
    if field is None:
        return where  # an alias: the variable's own name already
    alias = field.validation_alias
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return alias.choices[0]
    if isinstance(alias, str):
        return alias
    return f"{prefix}{where}".upper()
