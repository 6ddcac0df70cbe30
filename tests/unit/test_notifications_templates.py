"""Templates: every shipped one renders in Japanese and English; bad ones are refused on save."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from jinja2 import meta

from contracts.payments import TerminalTransactionKind
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


def _render_example(name: str, language: Language, **changes: object) -> templates.Rendered:
    """A shipped template rendered with its event's contract example, some fields changed."""
    tpl = shipped()[name]
    fields = example_fields(tpl.event) | changes
    return render(
        tpl.languages[language],
        context_for(
            fields,
            event_id="e",
            event_time=datetime.now(UTC),
            language=language,
            portal_url="https://portal.example/",
        ),
    )


def test_the_finance_office_is_told_of_payments_needing_attention_and_terminal_conflicts() -> None:
    book = load_rules(SHIPPED_RULES)
    told = {r.event: (r.to, r.kind, r.template) for r in book.rules}
    assert told["PaymentNeedsAttention.v1"] == (
        "staff:finance_office",
        "staff_alert",
        "payment_needs_attention",
    )
    assert told["TerminalTransactionConflict.v1"] == (
        "staff:finance_office",
        "staff_alert",
        "terminal_transaction_conflict",
    )
    assert {"payment_needs_attention", "terminal_transaction_conflict"} <= set(LIVE)


@pytest.mark.parametrize(
    ("language", "words"),
    [
        (Language.JA, ["期限後の入金", "二重の入金", "請求額と異なる金額"]),
        (
            Language.EN,
            ["paid after the request expired", "paid twice", "another amount than requested"],
        ),
    ],
)
def test_a_payment_needing_attention_gives_its_reasons_in_words(
    language: Language, words: list[str]
) -> None:
    rendered = _render_example(
        "payment_needs_attention",
        language,
        reasons=["paid_after_expiry", "paid_twice", "other_amount"],
    )
    for word in words:
        assert word in rendered.text
        assert word in rendered.html
    for code in ("paid_after_expiry", "paid_twice", "other_amount"):
        assert code not in rendered.text


def test_a_payment_of_another_amount_shows_both_amounts_in_yen() -> None:
    ja = _render_example(
        "payment_needs_attention", Language.JA, reasons=["other_amount"], amount_yen=12500
    )
    assert "入金額: 12,500円（請求額 300円）" in ja.text
    assert "12,500円" in ja.subject
    en = _render_example(
        "payment_needs_attention", Language.EN, reasons=["other_amount"], amount_yen=12500
    )
    assert "Amount paid: 12,500 yen (requested 300 yen)" in en.text


def test_a_payment_needing_attention_shows_its_times_in_tokyo_and_what_to_do() -> None:
    # Given in UTC: shown as Tokyo's 09:29:58, 09:30:00 and 09:30:04.
    rendered = _render_example(
        "payment_needs_attention",
        Language.JA,
        paid_at=datetime(2026, 11, 24, 0, 29, 58, tzinfo=UTC),
        expires_at=datetime(2026, 11, 24, 0, 30, tzinfo=UTC),
        received_at=datetime(2026, 11, 24, 0, 30, 4, tzinfo=UTC),
    )
    assert "支払日時: 2026年11月24日 09:29:58" in rendered.text
    assert "支払期限: 2026年11月24日 09:30:00" in rendered.text
    assert "受信日時: 2026年11月24日 09:30:04" in rendered.text
    assert "GET /payments/attention" in rendered.text
    assert "領収書番号: shiminka-2026-000124" in rendered.text
    assert "施設: shiminka" in rendered.text


@pytest.mark.parametrize("language", list(Language))
def test_a_terminal_conflict_shows_both_versions_and_the_dead_letter_to_look_at(
    language: Language,
) -> None:
    rendered = _render_example("terminal_transaction_conflict", language)
    posted, received = {
        Language.JA: (
            "売上 300円 QRコード / PayPay「住民票の写し」 2026年11月24日 10:15:00",
            "売上 450円 電子マネー / 交通系IC「戸籍謄本」 2026年12月01日 09:02:00",
        ),
        Language.EN: (
            'capture 300 yen QR code / PayPay "住民票の写し" at 2026-11-24 10:15:00',
            'capture 450 yen e-money / 交通系IC "戸籍謄本" at 2026-12-01 09:02:00',
        ),
    }[language]
    assert posted in rendered.text
    assert received in rendered.text
    assert "cityhall dlq list --consumer payments_terminals" in rendered.text
    assert "shiminka-t01" in rendered.subject
    assert "T01-000123" in rendered.subject
    assert "cityhall dlq list --consumer payments_terminals" in rendered.html


def test_a_conflicting_refund_names_the_capture_it_undoes_in_tokyo_time() -> None:
    fields = example_fields("TerminalTransactionConflict.v1")
    refund = fields["received"].model_copy(
        update={
            "kind": TerminalTransactionKind.REFUND,
            "item": None,
            "original_transaction_id": "T01-000100",
            "occurred_at": datetime(2026, 12, 1, 0, 2, tzinfo=UTC),
        }
    )
    rendered = _render_example("terminal_transaction_conflict", Language.JA, received=refund)
    assert (
        "返金 450円 電子マネー / 交通系IC（取引 T01-000100 に対して） 2026年12月01日 09:02:00"
        in rendered.text
    )
