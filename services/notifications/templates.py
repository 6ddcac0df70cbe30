"""Message templates (テンプレート): Jinja2 in a sandbox, subject + plain text + HTML, ja and en.

Shipped templates live in ``templates/<name>.yaml`` (version 0); saving a template through the
API adds a new version in the database and the newest one is used. A template may only use the
fields of the event it is about plus the documented extras (``EXTRAS``): anything else is refused
when it is saved, not when a message is sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache, lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml
from jinja2 import StrictUndefined, Template, TemplateSyntaxError, meta
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field

from contracts.envelope import event_examples
from services.notifications.domain import Language, event_models

TOKYO = ZoneInfo("Asia/Tokyo")
SHIPPED_DIR = Path(__file__).parent / "templates"
PARTS = ("subject", "text", "html")

EXTRAS: dict[str, str] = {
    "event_id": "The CloudEvents id of the event (イベントID).",
    "event_time": "When the event happened, as a datetime (use the `jst` filter).",
    "portal_url": "The city's online-procedures portal (NOTIFY_PORTAL_URL).",
    "city_name": "郡山市 / Koriyama City, in the message's language.",
}
"""Variables every template may use besides its event's fields."""

CITY_NAME = {Language.JA: "郡山市", Language.EN: "Koriyama City"}


class TemplateParts(BaseModel):
    """One language of a template: a one-line subject, a plain-text body and an HTML body."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    subject: str = Field(min_length=1, max_length=300)
    text: str = Field(min_length=1, max_length=20_000)
    html: str = Field(min_length=1, max_length=50_000)


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


class TemplateError(ValueError):
    """A template that cannot be saved or rendered; ``field`` names the part at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class UndeclaredVariable(TemplateError):
    """The template uses personalisation its event does not provide."""

    def __init__(self, field: str, names: list[str], event: str) -> None:
        super().__init__(
            field,
            f"uses {', '.join(names)}, which {event} does not provide "
            f"(allowed: its fields and {', '.join(sorted(EXTRAS))})",
        )
        self.names = names


class UnknownTemplate(LookupError):
    pass


def _yen(value: int) -> str:
    return f"{value:,}"


def _jst(value: datetime | str, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A time shown in Asia/Tokyo (stored UTC)."""
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    return when.astimezone(TOKYO).strftime(fmt)


def _environment(autoescape: bool) -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        autoescape=autoescape, undefined=StrictUndefined, keep_trailing_newline=True
    )
    env.filters["yen"] = _yen
    env.filters["jst"] = _jst
    return env


TEXT_ENV = _environment(autoescape=False)
HTML_ENV = _environment(autoescape=True)


def _env_for(part: str) -> SandboxedEnvironment:
    return HTML_ENV if part == "html" else TEXT_ENV


def allowed_variables(event: str) -> set[str]:
    model = event_models().get(event)
    if model is None:
        raise TemplateError("event", f"no event {event!r} in contracts")
    return set(model.model_fields) | set(EXTRAS)


def check(event: str, parts: TemplateParts, language: str) -> None:
    """Refuse syntax errors and variables the event does not provide."""
    allowed = allowed_variables(event)
    for part in PARTS:
        source = getattr(parts, part)
        field = f"{language}.{part}"
        try:
            tree = _env_for(part).parse(source)
        except TemplateSyntaxError as exc:
            raise TemplateError(field, f"line {exc.lineno}: {exc.message}") from exc
        unknown = sorted(meta.find_undeclared_variables(tree) - allowed)
        if unknown:
            raise UndeclaredVariable(field, unknown, event)


@lru_cache(maxsize=512)
def _compiled(part: str, source: str) -> Template:
    """Compiling costs milliseconds; a burst renders the same few templates thousands of times."""
    return _env_for(part).from_string(source)


def render(parts: TemplateParts, context: Mapping[str, Any]) -> Rendered:
    values = {}
    for part in PARTS:
        try:
            values[part] = _compiled(part, getattr(parts, part)).render(context)
        except Exception as exc:
            raise TemplateError(part, f"{type(exc).__name__}: {exc}") from exc
    return Rendered(
        subject=" ".join(values["subject"].split()), text=values["text"], html=values["html"]
    )


def context_for(
    fields: Mapping[str, Any],
    *,
    event_id: str,
    event_time: datetime,
    language: Language,
    portal_url: str,
) -> dict[str, Any]:
    return {
        **fields,
        "event_id": event_id,
        "event_time": event_time,
        "portal_url": portal_url,
        "city_name": CITY_NAME[language],
    }


def example_fields(event: str) -> dict[str, Any]:
    """The event's first documented example, as validated field values."""
    model = event_models()[event]
    examples = event_examples(model)  # type: ignore[arg-type]
    if not examples:
        raise TemplateError("event", f"{event} has no example to preview with")
    return dict(model.model_validate(examples[0]))


@dataclass(frozen=True)
class ShippedTemplate:
    name: str
    event: str
    languages: Mapping[Language, TemplateParts]


@cache
def shipped() -> dict[str, ShippedTemplate]:
    """Every template in ``templates/*.yaml``."""
    found = {}
    for path in sorted(SHIPPED_DIR.glob("*.yaml")):
        raw = yaml.safe_load(path.read_text("utf-8"))
        found[path.stem] = ShippedTemplate(
            name=path.stem,
            event=raw["event"],
            languages={Language(lang): TemplateParts(**raw[lang.value]) for lang in Language},
        )
    return found
