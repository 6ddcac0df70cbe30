"""The four services by name (what `cityhall serve <service>` looks up)."""

from __future__ import annotations

from importlib import import_module

from services.runtime.service import ServiceDefinition

SERVICE_NAMES = ("applications", "payments", "notifications", "reporting")


def definition(name: str) -> ServiceDefinition:
    if name not in SERVICE_NAMES:
        raise KeyError(f"unknown service {name!r}; choose one of {', '.join(SERVICE_NAMES)}")
    module = import_module(f"services.{name}.app")
    defn: ServiceDefinition = module.DEFINITION
    return defn
