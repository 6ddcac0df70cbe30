"""Forms (申請書の様式): each procedure's form is a JSON Schema; an application's answers are
checked against its own procedure's schema, and every bad field is named."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import SchemaError, ValidationError

_FORMATS = FormatChecker()


@dataclass(frozen=True)
class FieldProblem:
    """One bad field of a form: where (``form.copies``) and why."""

    field: str
    message: str


class FormInvalid(ValueError):
    """The answers do not fit the procedure's form (HTTP 422, one problem per field)."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems))
        self.problems = problems


class FormSchemaInvalid(ValueError):
    """A procedure's form is not a valid JSON Schema (a catalog row is refused for it)."""


def check_form_schema(schema: Any) -> None:
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise FormSchemaInvalid('a form is a JSON Schema of "type": "object"')
    problem = _schema_problem(json.dumps(schema, sort_keys=True))
    if problem is not None:
        raise FormSchemaInvalid(f"not a valid JSON Schema: {problem}")


@functools.lru_cache(maxsize=4096)
def _schema_problem(canonical: str) -> str | None:
    """Checking a schema against the metaschema takes about a millisecond; catalogs reuse a
    few forms thousands of times, so each distinct form is checked once."""
    try:
        Draft202012Validator.check_schema(json.loads(canonical))
    except SchemaError as exc:
        return str(exc.message)
    return None


def _fields(error: ValidationError) -> list[str]:
    base = ["form", *(str(p) for p in error.absolute_path)]
    instance = error.instance if isinstance(error.instance, dict) else {}
    if error.validator == "required":
        missing = [name for name in error.validator_value if name not in instance]
        return [".".join([*base, name]) for name in missing] or [".".join(base)]
    if error.validator == "additionalProperties":
        allowed = set((error.schema or {}).get("properties", {}))
        extra = [name for name in instance if name not in allowed]
        return [".".join([*base, name]) for name in extra] or [".".join(base)]
    return [".".join(base)]


def is_my_number(text: str) -> bool:
    """A 12-digit individual number (個人番号) with a valid check digit (番号法施行令 art. 8)."""
    digits = text.replace("-", "").replace(" ", "")
    if len(digits) != 12 or not digits.isascii() or not digits.isdigit():
        return False
    body = [int(d) for d in digits[:11]]
    total = sum(p * (n + 1 if n <= 6 else n - 5) for n, p in enumerate(reversed(body), 1))
    remainder = total % 11
    return int(digits[11]) == (0 if remainder <= 1 else 11 - remainder)


def _my_numbers(value: Any, where: list[str]) -> list[str]:
    if isinstance(value, str):
        return [".".join(where)] if is_my_number(value) else []
    if isinstance(value, dict):
        return [f for k, v in value.items() for f in _my_numbers(v, [*where, str(k)])]
    if isinstance(value, list):
        return [f for i, v in enumerate(value) for f in _my_numbers(v, [*where, str(i)])]
    return []


def _unstorable(value: Any, where: list[str]) -> list[FieldProblem]:
    """Text PostgreSQL cannot keep (JSON can carry it as \u0000 or \ud800): NUL characters and
    unpaired surrogates, in values and in keys."""
    if isinstance(value, str):
        if "\x00" in value:
            return [FieldProblem(".".join(where), "the NUL character is not allowed")]
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return [FieldProblem(".".join(where), "text with an unpaired surrogate is not allowed")]
        return []
    if isinstance(value, dict):
        return [
            p
            for k, v in value.items()
            for p in _unstorable(k, [*where, str(k)]) or _unstorable(v, [*where, str(k)])
        ]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _unstorable(v, [*where, str(i)])]
    return []


class Form:
    """A procedure's form with its compiled validator, built once and reused for every
    application to that procedure (see ``procedures.ProcedureCache``)."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self._validator = Draft202012Validator(schema, format_checker=_FORMATS)

    def check(self, answers: dict[str, Any]) -> None:
        """Raise ``FormInvalid`` naming each bad field of ``answers``.

        A My Number is refused wherever it appears: the city may not collect it (番号法 art. 20).
        """
        problems: list[FieldProblem] = _unstorable(answers, ["form"]) + [
            FieldProblem(f, "a My Number (個人番号) must not be sent")
            for f in _my_numbers(answers, ["form"])
        ]
        if problems:
            raise FormInvalid(problems)
        errors = self._validator.iter_errors(answers)
        for error in sorted(errors, key=lambda e: list(e.absolute_path)):
            if error.validator == "required":
                message = "this field is required"
            elif error.validator == "additionalProperties":
                message = "this field is not part of the form"
            else:
                message = error.message
            problems.extend(FieldProblem(name, message) for name in _fields(error))
        if problems:
            raise FormInvalid(problems)
