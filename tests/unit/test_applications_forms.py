"""Forms: JSON Schema per procedure, each bad field named."""

from __future__ import annotations

import pytest

from services.applications.forms import (
    Form,
    FormInvalid,
    FormSchemaInvalid,
    check_form_schema,
)

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "copies": {"type": "integer", "minimum": 1},
        "child": {
            "type": "object",
            "required": ["age"],
            "properties": {"age": {"type": "integer"}},
        },
    },
}


def test_good_answers_pass() -> None:
    Form(SCHEMA).check({"name": "郡山太郎", "copies": 1})


def test_every_bad_field_is_named_once() -> None:
    with pytest.raises(FormInvalid) as caught:
        Form(SCHEMA).check({"copies": 0, "extra": 1, "child": {}})
    fields = [p.field for p in caught.value.problems]
    assert sorted(fields) == ["form.child.age", "form.copies", "form.extra", "form.name"]


def test_a_form_that_is_not_a_json_schema_is_refused() -> None:
    with pytest.raises(FormSchemaInvalid):
        check_form_schema({"type": "object", "properties": {"x": {"type": "nonsense"}}})
    with pytest.raises(FormSchemaInvalid, match="object"):
        check_form_schema({"type": "string"})
