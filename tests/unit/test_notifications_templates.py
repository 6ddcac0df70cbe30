"""Templates: every shipped one renders in Japanese and English; bad ones are refused on save."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from jinja2 import meta

from services.notifications import templates
from services.notifications.domain import Language, event_models
from services.notifications.handlers import load_rules
from services.notifications.settings import SHIPPED_RULES
from services.notifications.templates import (
    TemplateError,
    TemplateParts,
    UndeclaredVariable,
    check,
    context_for,
    example_fields,
    render,
    shipped,
)

LIVE = sorted(name for name, t in shipped().items() if t.event in event_models())


def test_every_live_rule_has_a_shipped_template_about_its_event() -> None:
    book = load_rules(SHIPPED_RULES)
    dormant = {r.id for r in book.dormant()}
    live = [r for r in book.rules if r.id not in dormant]
    assert {r.template for r in live} <= set(LIVE)
    assert {"application_submitted", "payment_requested", "payment_captured"} <= set(LIVE)
    assert "dead_letters_growing" in LIVE


@pytest.mark.parametrize("language", list(Language))
@pytest.mark.parametrize("name", LIVE)
def test_every_shipped_template_renders_in_both_languages(name: str, language: Language) -> None:
    tpl = shipped()[name]
    parts = tpl.languages[language]
    check(tpl.event, parts, language.value)
    fields = example_fields(tpl.event)
    rendered = render(
        parts,
        context_for(
            fields,
            event_id="e-1",
            event_time=datetime.now(UTC),
            language=language,
            portal_url="https://portal.example/",
        ),
    )
    assert rendered.subject
    assert "\n" not in rendered.subject
    assert "{{" not in rendered.text
    assert "{{" not in rendered.html
    # Every text or number field the plain-text part names shows its example's value.
    named = meta.find_undeclared_variables(templates.TEXT_ENV.parse(parts.text))
    for name_ in named & set(fields):
        value = fields[name_]
        if isinstance(value, int) and not isinstance(value, bool):
            assert f"{value:,}" in rendered.text
        elif isinstance(value, str | uuid.UUID):
            assert str(value) in rendered.text
    assert rendered.html.lstrip().startswith("<")


def test_a_japanese_acknowledgement_shows_the_time_in_tokyo() -> None:
    tpl = shipped()["application_submitted"]
    fields = example_fields(tpl.event)  # submitted_at 2026-11-24T09:00:00+09:00
    rendered = render(
        tpl.languages[Language.JA],
        context_for(
            fields,
            event_id="e",
            event_time=datetime.now(UTC),
            language=Language.JA,
            portal_url="https://portal.example/",
        ),
    )
    assert "2026年11月24日 09:00" in rendered.text
    assert str(fields["application_id"]) in rendered.text


def test_a_payment_request_shows_integer_yen_with_separators() -> None:
    tpl = shipped()["payment_requested"]
    fields = example_fields(tpl.event) | {"amount_yen": 12345}
    rendered = render(
        tpl.languages[Language.EN],
        context_for(
            fields,
            event_id="e",
            event_time=datetime.now(UTC),
            language=Language.EN,
            portal_url="https://portal.example/",
        ),
    )
    assert "12,345 yen" in rendered.text


def test_a_template_using_a_variable_the_event_does_not_provide_is_refused() -> None:
    parts = TemplateParts(
        subject="申請を受け付けました",
        text="{{ applicant_name }} 様 {{ procedure_code }}",
        html="<p>{{ procedure_code }}</p>",
    )
    with pytest.raises(UndeclaredVariable) as refused:
        check("ApplicationSubmitted.v1", parts, "ja")
    assert refused.value.names == ["applicant_name"]
    assert refused.value.field == "ja.text"


def test_a_template_with_a_syntax_error_is_refused_naming_the_part() -> None:
    parts = TemplateParts(subject="{{ procedure_code", text="x", html="<p>x</p>")
    with pytest.raises(TemplateError) as refused:
        check("ApplicationSubmitted.v1", parts, "en")
    assert refused.value.field == "en.subject"


def test_html_escapes_event_values_but_text_does_not() -> None:
    parts = TemplateParts(subject="{{ reason }}", text="{{ reason }}", html="<p>{{ reason }}</p>")
    rendered = render(parts, {"reason": "<script>x</script> & co"})
    assert rendered.text == "<script>x</script> & co"
    assert rendered.html == "<p>&lt;script&gt;x&lt;/script&gt; &amp; co</p>"


def test_the_sandbox_refuses_reaching_into_python_internals() -> None:
    parts = TemplateParts(subject="x", text="{{ reason.__class__.__mro__ }}", html="<p>x</p>")
    with pytest.raises(TemplateError):
        render(parts, {"reason": "x"})


def test_extras_are_documented() -> None:
    assert set(templates.EXTRAS) == {"event_id", "event_time", "portal_url", "city_name"}
