"""OWASP API2, broken authentication: only a staff token the service knows, or an applicant
token the login gateway signed for cityhall and that has not expired, is anyone at all.

Every refusal is 401 with a JSON detail saying why (never the token) and
``WWW-Authenticate: Bearer``; none of them reaches the data.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.tokens import SECRET, STAFF, applicant_token, city_env

OPINION = {"procedure_code": "SHIMIN_NO_KOE", "form": {"subject": "公園", "body": "ベンチを"}}
ISSUER = "https://login.city.koriyama.lg.jp/"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": str(uuid.uuid4()),
        "iss": ISSUER,
        "aud": "cityhall",
        "iat": now,
        "exp": now + 600,
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_signed(header: dict[str, Any], payload: dict[str, Any], key: bytes | None) -> str:
    """A JWT built by hand (PyJWT itself refuses to make the forgeries below)."""
    signing = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = hmac.new(key, signing.encode(), hashlib.sha256).digest() if key else b""
    return f"{signing}.{b64(signature)}"


@pytest.fixture
async def applications(start_service: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    city_env(monkeypatch)
    return await start_service("applications")


async def refused(http: Any, headers: dict[str, str], why: str) -> None:
    resp = await http.get("/applications", headers=headers)
    assert resp.status_code == 401, resp.text
    assert why in resp.json()["detail"]
    assert resp.headers["www-authenticate"].startswith("Bearer")


async def test_no_credential_or_an_unknown_staff_token_is_refused(applications: Any) -> None:
    http = applications.http
    assert (await http.get("/applications")).status_code == 401
    assert (await http.post("/applications/x/review")).status_code in (401, 422)
    await refused(http, bearer("not-a-staff-token-at-all"), "unknown staff credential")
    await refused(http, {"Authorization": "Basic Y2xlcmswMTpwdw=="}, "Bearer")
    assert (await http.get("/applications", headers=STAFF)).status_code == 200


async def test_a_token_with_a_bad_signature_is_refused(applications: Any) -> None:
    forged = jwt.encode(claims(), "another-secret-of-32-characters!!", algorithm="HS256")
    await refused(applications.http, bearer(forged), "signature does not verify")
    good = applicant_token(uuid.uuid4())
    tampered = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    await refused(applications.http, bearer(tampered), "applicant token")


async def test_an_expired_token_is_refused_beyond_the_leeway(applications: Any) -> None:
    now = int(time.time())
    stale = jwt.encode(claims(iat=now - 7200, exp=now - 120), SECRET, algorithm="HS256")
    await refused(applications.http, bearer(stale), "expired")
    # Within the 30 s leeway for clock skew it still counts.
    fresh = jwt.encode(claims(iat=now - 600, exp=now - 10), SECRET, algorithm="HS256")
    assert (await applications.http.get("/applications", headers=bearer(fresh))).status_code == 200


async def test_a_token_for_another_audience_or_from_another_issuer_is_refused(
    applications: Any,
) -> None:
    other_aud = jwt.encode(claims(aud="another-city"), SECRET, algorithm="HS256")
    await refused(applications.http, bearer(other_aud), "another audience")
    other_iss = jwt.encode(claims(iss="https://evil.example/"), SECRET, algorithm="HS256")
    await refused(applications.http, bearer(other_iss), "unknown issuer")


@pytest.mark.parametrize("missing", ["exp", "iss", "aud", "sub"])
async def test_a_token_without_a_required_claim_is_refused(applications: Any, missing: str) -> None:
    token = jwt.encode(claims(**{missing: None}), SECRET, algorithm="HS256")
    await refused(applications.http, bearer(token), missing)


async def test_a_sub_that_is_not_an_account_id_is_refused(applications: Any) -> None:
    token = jwt.encode(claims(sub="admin"), SECRET, algorithm="HS256")
    await refused(applications.http, bearer(token), "not an account id")


async def test_alg_none_is_refused(applications: Any) -> None:
    unsigned = hand_signed({"alg": "none", "typ": "JWT"}, claims(), None)
    await refused(applications.http, bearer(unsigned), "'none' is not accepted")


async def test_hs256_signed_with_the_public_key_is_refused(
    start_service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Production: the gateway signs ES256 and services hold its public key only. A token
    "signed" HS256 with that public key as the HMAC secret (key confusion) is refused."""
    private = ec.generate_private_key(ec.SECP256R1())
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    city_env(monkeypatch)
    monkeypatch.delenv("APPLICANT_JWT_SECRET")
    monkeypatch.setenv("APPLICANT_JWT_PUBLIC_KEY", public_pem.decode())
    http = (await start_service("applications")).http

    genuine = jwt.encode(claims(), private, algorithm="ES256")
    assert (await http.get("/applications", headers=bearer(genuine))).status_code == 200
    confused = hand_signed({"alg": "HS256", "typ": "JWT"}, claims(), public_pem)
    await refused(http, bearer(confused), "'HS256' is not accepted")
    # Nor does the development secret work when production has a public key only.
    await refused(http, bearer(applicant_token(uuid.uuid4())), "'HS256' is not accepted")
    other_key = ec.generate_private_key(ec.SECP256R1())
    impostor = jwt.encode(claims(), other_key, algorithm="ES256")
    await refused(http, bearer(impostor), "signature does not verify")


async def test_applicant_tokens_are_refused_when_sign_in_is_not_configured(
    start_service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    city_env(monkeypatch)
    monkeypatch.delenv("APPLICANT_JWT_SECRET")
    http = (await start_service("applications")).http
    await refused(http, bearer(applicant_token(uuid.uuid4())), "not configured")
