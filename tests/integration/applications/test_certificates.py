"""Certificates (証明書): a paid, approved certificate application is issued as a PDF with a
number and a verification code; its applicant downloads it; anyone can check it is genuine
without learning whose it is."""

from __future__ import annotations

import io
import re
from typing import Any

from nats.js import JetStreamContext
from pypdf import PdfReader

from tests.integration.applications.conftest import STAFF
from tests.integration.applications.test_fees import captured
from tests.integration.helpers import publish_envelope, wait_for
from tests.tokens import applicant, applicant_id_of

CITIZEN = applicant()


async def issue(applications: Any, js: JetStreamContext, namespace: str) -> dict[str, Any]:
    http = applications.http
    body = {"procedure_code": "JUMINHYO", "form": {"copies": 1, "purpose": "勤務先への提出"}}
    app = (await http.post("/applications", json=body, headers=CITIZEN)).json()
    url = f"/applications/{app['id']}"
    assert app["status"] == "awaiting_payment"
    await publish_envelope(js, namespace, captured(app["id"]))

    async def paid() -> bool:
        return bool((await http.get(url, headers=CITIZEN)).json()["status"] == "paid")

    await wait_for(paid)
    for step in ("review", "approve", "certificate"):
        resp = await http.post(f"{url}/{step}", headers=STAFF)
        assert resp.status_code == 200, resp.text
    issued: dict[str, Any] = resp.json()
    return issued


def pdf_text(data: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


async def test_the_applicant_downloads_the_issued_certificate(
    applications: Any, js: JetStreamContext, namespace: str
) -> None:
    app = await issue(applications, js, namespace)
    resp = await applications.http.get(
        f"/applications/{app['id']}/certificate.pdf", headers=CITIZEN
    )
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/pdf"
    assert resp.content.startswith(b"%PDF-")
    text = pdf_text(resp.content)
    assert "住民票の写しの交付" in text
    assert app["certificate_number"] in text
    assert "勤務先への提出" in text
    assert "令和" in text  # the date on paper is in the Japanese era
    assert re.search(r"検証コード [A-Z2-9]{5}-[A-Z2-9]{5}", text)


async def test_someone_else_cannot_download_it(
    applications: Any, js: JetStreamContext, namespace: str
) -> None:
    app = await issue(applications, js, namespace)
    other = applicant()
    url = f"/applications/{app['id']}/certificate.pdf"
    assert (await applications.http.get(url, headers=other)).status_code == 404
    assert (await applications.http.get(url)).status_code == 404
    assert (await applications.http.get(url, headers=STAFF)).status_code == 200


async def test_the_public_check_confirms_a_genuine_certificate_and_reveals_nothing_personal(
    applications: Any, js: JetStreamContext, namespace: str
) -> None:
    app = await issue(applications, js, namespace)
    http = applications.http
    pdf = (await http.get(f"/applications/{app['id']}/certificate.pdf", headers=CITIZEN)).content
    found = re.search(r"検証コード ([A-Z2-9]{5}-[A-Z2-9]{5})", pdf_text(pdf))
    assert found is not None
    code = found.group(1)
    number = app["certificate_number"]

    resp = await http.post(
        "/certificates/verify", json={"certificate_number": number, "verification_code": code}
    )
    assert resp.status_code == 200
    body = resp.json()
    assert body["genuine"] is True
    assert body["procedure_name"] == "住民票の写しの交付"
    assert set(body) == {"genuine", "certificate_number", "procedure_name", "issued_at"}
    assert app["id"] not in resp.text
    assert applicant_id_of(CITIZEN) not in resp.text

    wrong = await http.post(
        "/certificates/verify", json={"certificate_number": number, "verification_code": "AAAAA"}
    )
    assert wrong.json() == {
        "genuine": False,
        "certificate_number": number,
        "procedure_name": None,
        "issued_at": None,
    }
    forged = await http.post(
        "/certificates/verify",
        json={"certificate_number": "072036-2026-9999999", "verification_code": code},
    )
    assert forged.json()["genuine"] is False


async def test_each_certificate_has_its_own_number(
    applications: Any, js: JetStreamContext, namespace: str
) -> None:
    first = await issue(applications, js, namespace)
    second = await issue(applications, js, namespace)
    assert first["certificate_number"] != second["certificate_number"]
    count = await applications.pool.fetchval("SELECT count(DISTINCT number) FROM certificates")
    assert count == 2
