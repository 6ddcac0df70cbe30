"""The procedure catalog (手続き一覧): reading catalog files and deciding what changed.

A catalog file is CSV or JSON with one procedure per row and these columns:

| column | meaning |
|---|---|
| ``code`` | procedure code, ``^[A-Z0-9][A-Z0-9_-]{1,31}$`` |
| ``name_ja`` | Japanese name (手続き名) |
| ``department`` | department (部局) |
| ``group`` | 1 (本人確認不要型) or 2 (本人確認必要型) |
| ``fee_yen`` | fee (手数料) in integer yen, 0 allowed |
| ``yields_certificate`` | true/false |
| ``form_schema`` | the form, a JSON Schema of type object (in CSV: its JSON text) |
| ``online_since`` | ISO date, empty while offline |
| ``planned_online_quarter`` | roadmap quarter ``2027-Q1``, optional |
| ``sample`` | true for generated sample data |

JSON is a list of such objects (or ``{"procedures": [...]}``). A row that does not fit is
rejected with its row number and the reason; the others are imported.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from contracts.applications import (
    PROCEDURE_CODE_PATTERN,
    ProcedureFactsV1,
    ProcedureGroup,
    ProcedureOnlinedV1,
    ProcedureRegisteredV1,
    ProcedureUpdatedV1,
)
from contracts.envelope import describe_validation_error
from services.applications.domain import Procedure
from services.applications.forms import FormSchemaInvalid, check_form_schema

SHIPPED = Path(__file__).parent / "sample_catalog.json"
"""The generated sample catalog shipped with the service (the hand-written core of common
certificates is in migration 0002)."""


class ProcedureRow(BaseModel):
    """One row of a catalog file, validated."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    code: str = Field(pattern=PROCEDURE_CODE_PATTERN)
    name_ja: str = Field(min_length=1, max_length=200)
    department: str = Field(min_length=1, max_length=100)
    group: ProcedureGroup
    fee_yen: int = Field(ge=0, le=1_000_000)
    yields_certificate: bool
    form_schema: dict[str, Any]
    online_since: date | None = None
    planned_online_quarter: str | None = Field(default=None, pattern=r"^\d{4}-Q[1-4]$")
    sample: bool = False

    @field_validator("form_schema", mode="before")
    @classmethod
    def _json_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not JSON: {exc.msg}") from exc
        return value

    @field_validator("online_since", "planned_online_quarter", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    def procedure(self) -> Procedure:
        return Procedure(
            code=self.code,
            name_ja=self.name_ja,
            department=self.department,
            group=self.group,
            fee_yen=self.fee_yen,
            yields_certificate=self.yields_certificate,
            form_schema=self.form_schema,
            online_since=self.online_since,
            planned_online_quarter=self.planned_online_quarter,
            sample=self.sample,
        )


@dataclass(frozen=True)
class RejectedRow:
    """A row left out of the import, and why."""

    row: int
    code: str | None
    reason: str


@dataclass
class ParsedCatalog:
    procedures: list[Procedure]
    rejected: list[RejectedRow]


class CatalogFileError(ValueError):
    """The file as a whole cannot be read (unknown format, not JSON, no header...)."""


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The raw rows of a CSV or JSON catalog file."""
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8-sig")
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CatalogFileError(f"{path}: not JSON: {exc}") from exc
        if isinstance(data, dict):
            data = data.get("procedures")
        if not isinstance(data, list):
            raise CatalogFileError(f'{path}: expected a list of procedures or {{"procedures": []}}')
        return [r if isinstance(r, dict) else {"_not_an_object": r} for r in data]
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames or "code" not in reader.fieldnames:
            raise CatalogFileError(f"{path}: a CSV catalog needs a header row with 'code'")
        return [dict(r) for r in reader]
    raise CatalogFileError(f"{path}: expected a .csv or .json file")


def parse_rows(rows: list[dict[str, Any]]) -> ParsedCatalog:
    """Validate each row; a duplicate code keeps its first row and rejects the others."""
    procedures: list[Procedure] = []
    rejected: list[RejectedRow] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(rows, start=1):
        code = raw.get("code") if isinstance(raw.get("code"), str) else None
        if None in raw:  # csv.DictReader puts surplus cells under the key None
            rejected.append(RejectedRow(number, code, "more cells than header columns"))
            continue
        try:
            row = ProcedureRow.model_validate(raw)
            check_form_schema(row.form_schema)
        except ValidationError as exc:
            rejected.append(RejectedRow(number, code, describe_validation_error(exc)))
            continue
        except FormSchemaInvalid as exc:
            rejected.append(RejectedRow(number, code, f"form_schema: {exc}"))
            continue
        if row.code in seen:
            rejected.append(
                RejectedRow(number, row.code, f"code: duplicate of row {seen[row.code]}")
            )
            continue
        seen[row.code] = number
        procedures.append(row.procedure())
    return ParsedCatalog(procedures, rejected)


def _facts(p: Procedure, now: datetime) -> dict[str, Any]:
    return {
        "procedure_code": p.code,
        "name_ja": p.name_ja,
        "department": p.department,
        "group": p.group,
        "fee_yen": p.fee_yen,
        "yields_certificate": p.yields_certificate,
        "online_since": p.online_since,
        "planned_online_quarter": p.planned_online_quarter,
        "sample": p.sample,
        "occurred_at": now,
    }


def changes(before: Procedure | None, after: Procedure, now: datetime) -> list[ProcedureFactsV1]:
    """The catalog events for one imported procedure: registered, updated and/or onlined.

    A new procedure is registered (its ``online_since`` says whether it is online already); an
    existing one that changed is updated, and onlined too when it went from offline to online.
    An unchanged procedure yields nothing, so importing the same file twice announces nothing
    the second time.
    """
    if now.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    facts = _facts(after, now)
    if before is None:
        return [ProcedureRegisteredV1(**facts)]
    if before == after:
        return []
    events: list[ProcedureFactsV1] = [ProcedureUpdatedV1(**facts)]
    if not before.online and after.online:
        events.append(ProcedureOnlinedV1(**facts))
    return events
