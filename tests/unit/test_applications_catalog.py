"""Catalog rows: read, validated, rejected with reasons; changes announced as events."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from contracts.applications import ProcedureOnlinedV1, ProcedureRegisteredV1, ProcedureUpdatedV1
from services.applications import catalog
from services.applications.catalog import generate

NOW = datetime(2026, 11, 24, 1, 0, tzinfo=UTC)
ROW = {
    "code": "DOG_TOROKU",
    "name_ja": "犬の登録",
    "department": "生活環境部",
    "group": 1,
    "fee_yen": 3000,
    "yields_certificate": False,
    "form_schema": {"type": "object"},
}


def test_good_rows_become_procedures_and_bad_ones_say_why() -> None:
    rows = [
        ROW,
        ROW | {"code": "lower"},
        ROW | {"code": "NEG", "fee_yen": -1},
        ROW | {"code": "FORM", "form_schema": {"type": "array"}},
        ROW | {"code": "BADSCHEMA", "form_schema": {"type": "object", "required": "x"}},
        ROW,
    ]
    parsed = catalog.parse_rows(rows)
    assert [p.code for p in parsed.procedures] == ["DOG_TOROKU"]
    reasons = {r.row: r.reason for r in parsed.rejected}
    assert reasons[2].startswith("code: String should match pattern")
    assert reasons[3].startswith("fee_yen: Input should be greater than or equal to 0")
    assert "type" in reasons[4]
    assert reasons[5].startswith("form_schema: not a valid JSON Schema")
    assert reasons[6] == "code: duplicate of row 1"


def test_csv_rows_carry_their_form_as_json_text(tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv"
    path.write_text(
        "code,name_ja,department,group,fee_yen,yields_certificate,form_schema,online_since\n"
        'A1,犬の登録,生活環境部,1,3000,false,"{""type"": ""object""}",2021-04-01\n'
        "A2,x,y,1,0,false,{not json},\n",
        encoding="utf-8",
    )
    parsed = catalog.parse_rows(catalog.read_rows(path))
    [proc] = parsed.procedures
    assert (proc.code, proc.online_since, proc.form_schema) == (
        "A1",
        date(2021, 4, 1),
        {"type": "object"},
    )
    assert parsed.rejected[0].reason.startswith("form_schema: Value error, not JSON")


def test_an_unknown_file_type_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "catalog.xlsx"
    path.write_bytes(b"")
    with pytest.raises(catalog.CatalogFileError, match=r"\.csv or \.json"):
        catalog.read_rows(path)


def test_changes_register_update_and_online_once() -> None:
    [offline] = catalog.parse_rows([ROW]).procedures
    [registered] = catalog.changes(None, offline, NOW)
    assert isinstance(registered, ProcedureRegisteredV1)
    assert catalog.changes(offline, offline, NOW) == []
    online = replace(offline, online_since=date(2026, 11, 24))
    updated, onlined = catalog.changes(offline, online, NOW)
    assert isinstance(updated, ProcedureUpdatedV1)
    assert isinstance(onlined, ProcedureOnlinedV1)
    assert onlined.online_since == date(2026, 11, 24)
    [only_updated] = catalog.changes(online, replace(online, fee_yen=2000), NOW)
    assert isinstance(only_updated, ProcedureUpdatedV1)


def test_the_shipped_sample_catalog_is_valid_marked_and_up_to_date() -> None:
    rows = json.loads(catalog.SHIPPED.read_text(encoding="utf-8"))
    parsed = catalog.parse_rows(rows)
    assert parsed.rejected == []
    assert len(parsed.procedures) == generate.TOTAL_WITH_CORE - generate.CORE_SIZE
    assert all(p.sample and p.code.startswith("SAMPLE-") for p in parsed.procedures)
    assert all(p.name_ja.endswith("（サンプル）") for p in parsed.procedures)
    assert len({p.department for p in parsed.procedures}) == len(generate.DEPARTMENTS)
    assert catalog.SHIPPED.read_text(encoding="utf-8") == generate.dumps(generate.generate())
