"""The four services by name (what `cityhall serve <service>` looks up)."""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

from services.runtime.service import ServiceDefinition

SERVICE_NAMES = ("applications", "payments", "notifications", "reporting")


def definition(name: str) -> ServiceDefinition:
    if name not in SERVICE_NAMES:
        raise KeyError(f"unknown service {name!r}; choose one of {', '.join(SERVICE_NAMES)}")
    module = import_module(f"services.{name}.app")
    defn: ServiceDefinition = module.DEFINITION
    return defn


def service_modules(part: str) -> list[tuple[str, ModuleType]]:
    """Each service's optional ``services/<name>/<part>.py`` (``cli``, ``local``), by name."""
    found = []
    for name in SERVICE_NAMES:
        module_name = f"services.{name}.{part}"
        try:
            found.append((name, import_module(module_name)))
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
    return found
