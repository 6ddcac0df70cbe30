"""The catalog: `cityhall catalog import` on a real database, catalog events on the bus, and
the search API."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from nats.js import JetStreamContext

from contracts.subjects import APPLICATIONS
from tests.integration.helpers import wait_for

REPO = Path(__file__).resolve().parents[3]


async def cityhall(*args: str, database_url: str, namespace: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("DATABASE_URL")}
    env |= {"DATABASE_URL": database_url, "CITYHALL_NAMESPACE": namespace, "COLUMNS": "200"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cityhall",
        *args,
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


ROW = {
    "code": "INU_TOROKU",
    "name_ja": "犬の登録",
    "department": "生活環境部",
    "group": 1,
    "fee_yen": 3000,
    "yields_certificate": False,
    "form_schema": {"type": "object", "required": ["dog_name"]},
}


async def test_import_registers_reports_rejects_and_announces(
    applications: Any,
    js: JetStreamContext,
    database_url: str,
    namespace: str,
    tmp_path: Path,
) -> None:
    path = tmp_path / "catalog.json"
    rows = [ROW, ROW | {"code": "BAD", "group": 3}, ROW | {"code": "CHO", "fee_yen": "abc"}]
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    code, out = await cityhall(
        "catalog", "import", str(path), database_url=database_url, namespace=namespace
    )
    assert code == 1, out  # some rows were rejected
    assert "imported 1 procedure(s): 1 registered" in out
    assert "2 rejected; 11 earlier procedure(s) announced" in out  # the migration's core
    assert "group: Input should be 1 or 2" in out
    assert "fee_yen: Input should be a valid integer" in out

    found = (await applications.http.get("/procedures/INU_TOROKU")).json()
    assert (found["name_ja"], found["fee_yen"], found["online"]) == ("犬の登録", 3000, False)

    # The same procedure, now online: updated and onlined; an unchanged import says nothing.
    online = [ROW | {"online_since": "2026-11-24"}]
    path.write_text(json.dumps(online, ensure_ascii=False), encoding="utf-8")
    code, out = await cityhall(
        "catalog", "import", str(path), database_url=database_url, namespace=namespace
    )
    assert code == 0, out
    assert "1 updated, 1 onlined" in out
    assert "announced" not in out  # the core is announced once
    code, out = await cityhall(
        "catalog", "import", str(path), database_url=database_url, namespace=namespace
    )
    assert "1 unchanged" in out

    stream = APPLICATIONS.stream_name(namespace)

    async def catalog_events() -> list[str] | None:
        info = await js.stream_info(stream)
        types = []
        for seq in range(1, info.state.last_seq + 1):
            msg = await js.get_msg(stream, seq=seq)
            if msg.headers and msg.headers.get("ce-subject") == "INU_TOROKU":
                types.append(msg.headers["ce-type"].rsplit(".", 2)[-2])
        return types if len(types) == 3 else None

    assert await wait_for(catalog_events) == [
        "ProcedureRegistered",
        "ProcedureUpdated",
        "ProcedureOnlined",
    ]

    async def core_registered() -> set[str]:
        info = await js.stream_info(stream)
        codes = set()
        for seq in range(1, info.state.last_seq + 1):
            msg = await js.get_msg(stream, seq=seq)
            if msg.headers and msg.headers["ce-type"].endswith("ProcedureRegistered.v1"):
                codes.add(msg.headers["ce-subject"])
        return codes if len(codes) == 12 else set()

    registered = await wait_for(core_registered)
    assert {"JUMINHYO", "KOSEKI_TOHON", "INU_TOROKU"} <= registered


async def test_applications_follow_an_imported_form(
    applications: Any, database_url: str, namespace: str, tmp_path: Path
) -> None:
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps([ROW], ensure_ascii=False), encoding="utf-8")
    code, out = await cityhall(
        "catalog", "import", str(path), database_url=database_url, namespace=namespace
    )
    assert code == 0, out
    http = applications.http
    bad = await http.post("/applications", json={"procedure_code": "INU_TOROKU"})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "form", "dog_name"]
    ok = await http.post(
        "/applications", json={"procedure_code": "INU_TOROKU", "form": {"dog_name": "ポチ"}}
    )
    assert ok.status_code == 201, ok.text


async def test_search_finds_by_words_department_group_and_online_status(
    applications: Any,
) -> None:
    http = applications.http
    body = (await http.get("/procedures", params={"q": "戸籍"})).json()
    codes = {p["code"] for p in body["items"]}
    assert codes == {"KOSEKI_TOHON", "KOSEKI_SHOHON", "KOSEKI_FUHYO", "KAISEI_GENKOSEKI"}
    assert body["total"] == 4

    body = (await http.get("/procedures", params={"department": "税務部"})).json()
    assert {p["code"] for p in body["items"]} == {"SHOTOKU_KAZEI_SHOMEI", "NOZEI_SHOMEI"}

    body = (await http.get("/procedures", params={"group": 1, "online": "true"})).json()
    assert {p["code"] for p in body["items"]} == {"BOSAI_MAIL_TOROKU", "SHIMIN_NO_KOE", "JUMINHYO"}

    body = (await http.get("/procedures", params={"online": "false", "q": "謄本"})).json()
    assert {p["code"] for p in body["items"]} == {"JOSEKI_TOHON", "KAISEI_GENKOSEKI"}
    assert all(p["planned_online_quarter"] == "2027-Q1" for p in body["items"])

    # Words are ANDed; LIKE's wildcards in a search are plain characters.
    assert (await http.get("/procedures", params={"q": "戸籍 附票"})).json()["total"] == 1
    assert (await http.get("/procedures", params={"q": "%"})).json()["total"] == 0


async def test_search_pages_through_the_catalog(applications: Any) -> None:
    http = applications.http
    first = (await http.get("/procedures", params={"limit": 4})).json()
    second = (await http.get("/procedures", params={"limit": 4, "offset": 4})).json()
    assert first["total"] == second["total"] == 11
    assert len(first["items"]) == 4
    seen = [p["code"] for p in first["items"] + second["items"]]
    assert seen == sorted(seen)
    assert len(set(seen)) == 8
    resp = await http.get("/procedures", params={"limit": 0})
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["query", "limit"]


async def test_certificate_fees_are_the_citys(applications: Any) -> None:
    http = applications.http
    fees = {
        p["code"]: p["fee_yen"]
        for p in (await http.get("/procedures", params={"limit": 50})).json()["items"]
    }
    assert fees["KOSEKI_TOHON"] == fees["KOSEKI_SHOHON"] == 450
    assert fees["JOSEKI_TOHON"] == fees["KAISEI_GENKOSEKI"] == 750
    for code in ("JUMINHYO", "INKAN_SHOMEI", "SHOTOKU_KAZEI_SHOMEI", "NOZEI_SHOMEI"):
        assert fees[code] == 300
    assert fees["KOSEKI_FUHYO"] == 300
