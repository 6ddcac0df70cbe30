"""Settings are validated at start-up with one clear line per bad value."""

from __future__ import annotations

import pytest

from services.runtime.settings import SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "NATS_URL",
        "DATABASE_URL",
        "REPORTING_DATABASE_URL",
        "CITYHALL_NAMESPACE",
        "HTTP_PORT",
        "DB_POOL_MAX",
        "CITYHALL_DB_SCHEMA",
    ):
        monkeypatch.delenv(name, raising=False)


def test_each_bad_value_is_named_with_what_was_expected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NATS_URL", "localhost:4222")
    monkeypatch.setenv("DATABASE_URL", "mysql://x")
    monkeypatch.setenv("HTTP_PORT", "99999")
    with pytest.raises(SettingsError) as err:
        load_settings("reporting")
    message = str(err.value)
    assert "cityhall reporting: invalid configuration" in message
    assert "NATS_URL: expected nats://host:port" in message
    assert "(got 'localhost:4222')" in message
    assert "DATABASE_URL: expected postgresql://" in message
    assert "HTTP_PORT: Input should be less than or equal to 65535" in message


def test_a_missing_database_url_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError, match="DATABASE_URL \\(or REPORTING_DATABASE_URL\\)"):
        load_settings("reporting")


def test_service_database_url_wins_and_defaults_follow_the_service(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://shared@db/cityhall")
    monkeypatch.setenv("REPORTING_DATABASE_URL", "postgresql://reporting@db/reporting")
    s = load_settings("reporting")
    assert s.dsn == "postgresql://reporting@db/reporting"
    assert (s.schema_name, s.port, s.namespace) == ("reporting", 8004, "cityhall")


def test_a_test_namespace_gets_its_own_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://x@db/cityhall")
    monkeypatch.setenv("CITYHALL_NAMESPACE", "t1234")
    assert load_settings("applications").schema_name == "t1234_applications"


def test_a_schema_name_that_is_not_an_identifier_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://x@db/cityhall")
    monkeypatch.setenv("CITYHALL_DB_SCHEMA", 'x"; DROP TABLE y; --')
    with pytest.raises(SettingsError, match="CITYHALL_DB_SCHEMA: use lower-case letters"):
        load_settings("applications")


@pytest.mark.parametrize(
    ("service", "variable", "bad", "expected"),
    [
        ("reporting", "REPORTING_ANSWER_CACHE_MB", "-5", "greater than or equal to 0 (got '-5')"),
        ("payments", "PAYMENT_EXPIRY_SWEEP_S", "soon", "valid number"),
        ("applications", "APPLICATIONS_STAFF_TOKENS", "counter01=short", "16+ characters"),
        ("notifications", "NOTIFY_SMTP_PORT", "seventy", "valid integer"),
    ],
)
def test_a_services_own_bad_setting_stops_it_before_it_serves(
    monkeypatch: pytest.MonkeyPatch, service: str, variable: str, bad: str, expected: str
) -> None:
    from services.registry import definition
    from services.runtime.server import build_app
    from services.runtime.settings import ServiceSettings

    monkeypatch.setenv(variable, bad)
    settings = ServiceSettings(service=service, database_url="postgresql://x@127.0.0.1/db")
    with pytest.raises(SettingsError) as stopped:
        build_app(definition(service), settings)  # before any server or connection
    [heading, line] = str(stopped.value).splitlines()
    assert heading == f"cityhall {service}: invalid configuration"
    assert line.startswith(f"  {variable}: ")
    assert expected in line


def test_a_credential_is_never_echoed_in_the_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.runtime.auth import load_staff_credentials

    monkeypatch.setenv("REPORTING_STAFF_TOKENS", "ops01=tok-short")
    with pytest.raises(SettingsError) as stopped:
        load_staff_credentials("reporting")
    message = str(stopped.value)
    assert "REPORTING_STAFF_TOKENS: expected staff_id=token pairs" in message
    assert "tok-short" not in message
    assert "(got" not in message


def test_production_refuses_to_start_without_its_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CITYHALL_ENV=production: no local default stands in for an identity or a key."""
    from services.notifications.settings import load_notification_settings
    from services.payments.settings import load_payments_settings
    from services.runtime.auth import load_staff_credentials

    monkeypatch.setenv("DATABASE_URL", "postgresql://payments@db:5432/payments")
    for name in ("NATS_NKEY_FILE", "PAYMENT_PROVIDER_SECRET", "PAYMENTS_STAFF_TOKENS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("NOTIFY_WEBHOOK_SECRET", raising=False)
    load_settings("payments")  # development: starts without them
    load_payments_settings()

    monkeypatch.setenv("CITYHALL_ENV", "production")
    with pytest.raises(SettingsError, match="no NATS_NKEY_FILE"):
        load_settings("payments")
    with pytest.raises(SettingsError) as err:
        load_payments_settings()
    assert "PAYMENT_PROVIDER_SECRET" in str(err.value)
    with pytest.raises(SettingsError, match="PAYMENTS_STAFF_TOKENS"):
        load_staff_credentials("payments")
    with pytest.raises(SettingsError, match="NOTIFY_WEBHOOK_SECRET"):
        load_notification_settings()

    monkeypatch.setenv("NATS_NKEY_FILE", "/var/run/secrets/cityhall/nats/seed")
    monkeypatch.setenv("PAYMENT_PROVIDER_SECRET", "a-provider-secret-of-some-length")
    monkeypatch.setenv("PAYMENTS_STAFF_TOKENS", "kaikei=a-staff-token-0000000001")
    assert load_settings("payments").nats_nkey_file is not None
    assert load_payments_settings().provider_secret is not None
