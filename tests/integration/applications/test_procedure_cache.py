"""Procedures are kept in memory between submissions (services.applications.procedures): a
procedure changed by `cityhall catalog import`, another process, applies to the very next
submission all the same."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.integration.applications.test_catalog import ROW, cityhall


async def import_rows(rows: list[dict[str, Any]], tmp_path: Path, **where: str) -> None:
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    code, out = await cityhall("catalog", "import", str(path), **where)
    assert code == 0, out


async def test_a_procedure_changed_by_an_import_applies_to_the_next_submission(
    applications: Any, database_url: str, namespace: str, tmp_path: Path
) -> None:
    where = {"database_url": database_url, "namespace": namespace}
    http = applications.http
    await import_rows([ROW | {"online_since": "2026-11-24"}], tmp_path, **where)
    dog = {"procedure_code": "INU_TOROKU", "form": {"dog_name": "ポチ"}}
    first = await http.post("/applications", json=dog)
    assert first.status_code == 201, first.text
    assert first.json()["fee_yen"] == 3000

    # The form now also asks for the breed, and the fee is lower.
    changed = ROW | {
        "online_since": "2026-11-24",
        "fee_yen": 2000,
        "form_schema": {"type": "object", "required": ["dog_name", "breed"]},
    }
    await import_rows([changed], tmp_path, **where)
    refused = await http.post("/applications", json=dog)
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"][0]["loc"] == ["body", "form", "breed"]
    dog["form"] |= {"breed": "柴犬"}
    second = await http.post("/applications", json=dog)
    assert second.status_code == 201, second.text
    assert (second.json()["fee_yen"], second.json()["status"]) == (2000, "awaiting_payment")


async def test_an_unknown_procedure_is_refused_until_it_is_imported(
    applications: Any, database_url: str, namespace: str, tmp_path: Path
) -> None:
    http = applications.http
    dog = {"procedure_code": "INU_TOROKU", "form": {"dog_name": "ポチ"}}
    unknown = await http.post("/applications", json=dog)
    assert unknown.status_code == 422
    assert unknown.json()["detail"][0]["loc"] == ["body", "procedure_code"]
    await import_rows([ROW], tmp_path, database_url=database_url, namespace=namespace)
    assert (await http.post("/applications", json=dog)).status_code == 201


async def test_a_retry_replays_its_first_response_even_after_the_form_changed(
    applications: Any, database_url: str, namespace: str, tmp_path: Path
) -> None:
    where = {"database_url": database_url, "namespace": namespace}
    http = applications.http
    await import_rows([ROW], tmp_path, **where)
    dog = {"procedure_code": "INU_TOROKU", "form": {"dog_name": "ポチ"}}
    headers = {"Idempotency-Key": "dog-1"}
    first = await http.post("/applications", json=dog, headers=headers)
    assert first.status_code == 201, first.text
    stricter = ROW | {"form_schema": {"type": "object", "required": ["dog_name", "breed"]}}
    await import_rows([stricter], tmp_path, **where)
    again = await http.post("/applications", json=dog, headers=headers)
    assert (again.status_code, again.json()) == (201, first.json())
    assert await applications.pool.fetchval("SELECT count(*) FROM applications") == 1
