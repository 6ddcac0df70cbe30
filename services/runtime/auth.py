"""Who is calling: staff (職員), applicants (申請者) or the public, shared by every service.

* **Staff** send ``Authorization: Bearer <token>``; ``StaffCredentials`` reads them for every
  service alike from ``<SERVICE>_STAFF_TOKENS`` as comma-separated ``staff_id=token`` pairs
  (opaque tokens, compared in constant time).
* **Applicants** (citizens) sign in at the city's login gateway, which gives them a JWT
  (``sub``: their pseudonymous account id), sent the same way: ``Authorization: Bearer <jwt>``.
  The token is tried as a staff token first, then verified as a JWT (``ApplicantTokens``).
* Anyone else is the public, known only by client IP (for rate limits).

``caller`` is the FastAPI dependency every service's router declares: it identifies the caller
and counts the request against the caller's rate limit (``http_limits``); routes take ``Who``
(anyone, identified) or ``Staff`` (staff only).
"""

from __future__ import annotations

import hmac
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BeforeValidator, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from services.runtime.http_limits import RateLimited, RateLimits
from services.runtime.settings import REQUIRED_IN_PRODUCTION, read_settings

if TYPE_CHECKING:
    from services.runtime.service import ServiceContext

MIN_TOKEN_LENGTH = 16


def parse_staff_tokens(value: Any) -> Any:
    """``"kaikei01=<token>,madoguchi02=<token>"`` -> ``{"kaikei01": "<token>", ...}``."""
    if not isinstance(value, str):
        return value
    pairs: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in value.split(","))):
        staff_id, sep, token = item.partition("=")
        if not sep or not staff_id.strip() or len(token.strip()) < MIN_TOKEN_LENGTH:
            raise ValueError(
                f"expected staff_id=token pairs, tokens of {MIN_TOKEN_LENGTH}+ characters"
            )
        pairs[staff_id.strip()] = token.strip()
    return pairs


StaffTokens = Annotated[dict[str, SecretStr], NoDecode, BeforeValidator(parse_staff_tokens)]


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def staff_id_for(token: str, tokens: Mapping[str, SecretStr]) -> str | None:
    """The staff member whose token this is (compared in constant time), or None."""
    for staff_id, secret in tokens.items():
        if hmac.compare_digest(secret.get_secret_value().encode(), token.encode()):
            return staff_id
    return None


# -- applicants (申請者): tokens signed by the city's login gateway ------------------------------


class ApplicantTokenSettings(BaseSettings):
    """How applicant tokens are checked; the same for every service (``APPLICANT_JWT_*``).

    The login gateway signs a JWT whose ``sub`` is the citizen's pseudonymous account id. In
    production it signs with its private key and services hold the public key
    (``APPLICANT_JWT_PUBLIC_KEY``: ES256 for an EC P-256 key, RS256 for RSA); for development
    and tests a shared secret (``APPLICANT_JWT_SECRET``, HS256) will do. Neither set: applicant
    tokens are refused (401), as staff endpoints are without staff tokens.
    """

    model_config = SettingsConfigDict(env_prefix="APPLICANT_JWT_", extra="ignore")

    issuer: str = Field(
        default="https://login.city.koriyama.lg.jp/", min_length=1, description="``iss``."
    )
    audience: str = Field(default="cityhall", min_length=1, description="``aud``.")
    secret: SecretStr | None = Field(
        default=None, description="HS256 shared secret (32+ characters): development, tests."
    )
    public_key: str | None = Field(
        default=None,
        description="The gateway's public key: PEM text, or the path of a PEM file.",
    )
    leeway_s: float = Field(
        default=30.0, ge=0, le=300, description="Clock skew allowed on exp/nbf/iat."
    )

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_SECRET_LENGTH:
            raise ValueError(f"an HS256 secret needs {MIN_SECRET_LENGTH}+ characters")
        return value

    @field_validator("public_key")
    @classmethod
    def _a_public_key(cls, value: str | None) -> str | None:
        if value:
            _public_key(value)  # ValueError when it is neither an EC P-256 nor an RSA key
        return value or None


MIN_SECRET_LENGTH = 32
TOKEN_CACHE_SIZE = 8192
"""Verified tokens remembered: a citizen's browser sends the same token for its whole session,
so most requests skip the signature check."""


def _public_key(value: str) -> tuple[str, Any]:
    """(algorithm, key) of a PEM public key given as text or as a file path."""
    pem = value.encode() if "-----BEGIN" in value else Path(value).read_bytes()
    key = serialization.load_pem_public_key(pem)
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256", key
    if isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048:
        return "RS256", key
    raise ValueError("expected an EC P-256 (ES256) or RSA 2048+ (RS256) public key")


class CredentialRefused(Exception):
    """The request's credential is not good (401); the message says why, never the token."""


class ApplicantTokens:
    """Verifies applicant JWTs: algorithm pinned per key, ``exp``, ``iss``, ``aud``, ``sub``."""

    def __init__(self, settings: ApplicantTokenSettings) -> None:
        self.settings = settings
        self._keys: dict[str, Any] = {}
        # One key per algorithm, fixed here: the token's header only selects among them, so
        # "alg: none" or HS256 signed with the public key (key confusion) finds no key.
        if settings.secret is not None:
            self._keys["HS256"] = settings.secret.get_secret_value().encode()
        if settings.public_key:
            alg, key = _public_key(settings.public_key)
            self._keys[alg] = key
        self._verified: dict[str, tuple[uuid.UUID, float]] = {}

    def applicant_of(self, token: str, now: float | None = None) -> uuid.UUID:
        """The applicant a valid token is for; CredentialRefused otherwise."""
        now = time.time() if now is None else now
        known = self._verified.get(token)
        if known is not None:
            applicant, exp = known
            if now <= exp + self.settings.leeway_s:
                return applicant
            del self._verified[token]
            raise CredentialRefused("applicant token expired")
        applicant, exp = self._verify(token)
        if len(self._verified) >= TOKEN_CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = (applicant, exp)
        return applicant

    def _verify(self, token: str) -> tuple[uuid.UUID, float]:
        if not self._keys:
            raise CredentialRefused(
                "applicant sign-in is not configured (APPLICANT_JWT_SECRET or _PUBLIC_KEY)"
            )
        try:
            alg = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError as exc:
            raise CredentialRefused("malformed applicant token") from exc
        key = self._keys.get(alg) if isinstance(alg, str) else None
        if key is None:
            raise CredentialRefused(f"applicant token algorithm {alg!r} is not accepted")
        s = self.settings
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[str(alg)],
                audience=s.audience,
                issuer=s.issuer,
                leeway=s.leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"], "strict_aud": True},
            )
        except jwt.ExpiredSignatureError as exc:
            raise CredentialRefused("applicant token expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise CredentialRefused("applicant token is for another audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise CredentialRefused("applicant token from an unknown issuer") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise CredentialRefused(f"applicant token lacks the {exc.claim!r} claim") from exc
        except jwt.InvalidSignatureError as exc:
            raise CredentialRefused("applicant token signature does not verify") from exc
        except jwt.PyJWTError as exc:
            raise CredentialRefused("invalid applicant token") from exc
        try:
            applicant = uuid.UUID(str(claims["sub"]))
        except ValueError as exc:
            raise CredentialRefused("applicant token's sub is not an account id") from exc
        return applicant, float(claims["exp"])


def mint_applicant_token(
    applicant_id: uuid.UUID,
    secret: str,
    *,
    issuer: str = "https://login.city.koriyama.lg.jp/",
    audience: str = "cityhall",
    lifetime_s: float = 3600,
    now: float | None = None,
) -> str:
    """An HS256 applicant token as the login gateway would sign it (development and tests)."""
    issued = int(time.time() if now is None else now)
    claims = {
        "sub": str(applicant_id),
        "iss": issuer,
        "aud": audience,
        "iat": issued,
        "exp": issued + int(lifetime_s),
    }
    return jwt.encode(claims, secret, algorithm="HS256")


# -- who is calling ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request: a member of staff, an applicant, or nobody known (by client IP)."""

    staff_id: str | None = None
    applicant_id: uuid.UUID | None = None
    client_ip: str | None = None

    @property
    def key_scope(self) -> str:
        """Whose Idempotency-Keys these are."""
        if self.staff_id is not None:
            return f"staff:{self.staff_id}"
        if self.applicant_id is not None:
            return f"applicant:{self.applicant_id}"
        return "anonymous"

    def owns(self, applicant_id: uuid.UUID | None) -> bool:
        """Is this the applicant the object belongs to? (Staff are not owners.)"""
        return self.applicant_id is not None and self.applicant_id == applicant_id

    def may_see(self, applicant_id: uuid.UUID | None) -> bool:
        """Staff, or the applicant the object belongs to."""
        return self.staff_id is not None or self.owns(applicant_id)


def identify(
    authorization: str | None,
    staff_tokens: Mapping[str, SecretStr],
    applicants: ApplicantTokens,
    client_ip: str | None = None,
) -> Caller:
    """The caller of ``Authorization: Bearer <token>``: staff tokens are tried first (opaque,
    compared in constant time), then the token is checked as an applicant JWT. No header:
    an anonymous caller. A header that is neither: CredentialRefused."""
    if authorization is None:
        return Caller(client_ip=client_ip)
    token = bearer_token(authorization)
    if token is None:
        raise CredentialRefused("expected 'Authorization: Bearer <token>'")
    staff_id = staff_id_for(token, staff_tokens)
    if staff_id is not None:
        return Caller(staff_id=staff_id, client_ip=client_ip)
    if token.count(".") != 2:
        raise CredentialRefused("unknown staff credential")
    return Caller(applicant_id=applicants.applicant_of(token), client_ip=client_ip)


def load_applicant_tokens() -> ApplicantTokens:
    """The verifier from ``APPLICANT_JWT_*``; a bad value stops start-up, one line each."""
    return ApplicantTokens(read_settings(ApplicantTokenSettings, "applicant tokens"))


class StaffCredentials(BaseSettings):
    """A service's staff credentials (職員), ``<SERVICE>_STAFF_TOKENS``: read here, for every
    service alike, by the one ``caller`` dependency."""

    model_config = SettingsConfigDict(extra="ignore")

    staff_tokens: StaffTokens = Field(
        default_factory=dict,
        description="Staff credentials: comma-separated staff_id=token pairs (tokens of 16+ "
        "characters), sent as 'Authorization: Bearer <token>'. Empty: staff routes refuse all.",
        json_schema_extra={REQUIRED_IN_PRODUCTION: True},
    )


def load_staff_credentials(service: str) -> StaffCredentials:
    """``<SERVICE>_STAFF_TOKENS``; a bad value stops start-up (list it in the service's
    ``ServiceDefinition.settings``), naming the variable and never echoing a token."""
    return read_settings(StaffCredentials, service, prefix=f"{service.upper()}_")


def staff_credentials(ctx: ServiceContext) -> StaffCredentials:
    """The running service's staff credentials, read once."""
    return ctx.provide(StaffCredentials, lambda: load_staff_credentials(ctx.settings.service))


StaffTokensOf = Callable[["ServiceContext"], Mapping[str, SecretStr]]
_bearer = HTTPBearer(
    auto_error=False,
    description="A staff token (`<SERVICE>_STAFF_TOKENS`) or an applicant JWT from the login "
    "gateway.",
)


def caller_dependency(staff_tokens: StaffTokensOf) -> Callable[..., Awaitable[Caller]]:
    """A FastAPI dependency that identifies the caller and counts it against its rate limit.

    A refused credential is 401 and counts against the client IP's limit (so guessing tokens
    is rate limited too). Declare it on the service's router so every route is counted; the
    routes that need the caller take the same dependency and get the same answer (FastAPI
    solves a dependency once per request).
    """

    async def caller(
        request: Request,
        _scheme: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Caller:
        ctx: ServiceContext = request.app.state.ctx
        client_ip = request.client.host if request.client else None
        try:
            who = identify(
                request.headers.get("authorization"),
                staff_tokens(ctx),
                request.app.state.applicant_tokens,
                client_ip,
            )
        except CredentialRefused as exc:
            await _count(request, "anonymous", client_ip or "?")
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                str(exc),
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            ) from None
        if who.staff_id is not None:
            await _count(request, "staff", who.staff_id)
        elif who.applicant_id is not None:
            await _count(request, "applicant", str(who.applicant_id))
        else:
            await _count(request, "anonymous", client_ip or "?")
        return who

    return caller


async def _count(request: Request, kind: str, who: str) -> None:
    rates: RateLimits | None = getattr(request.app.state, "rate_limits", None)
    if rates is None:
        return
    try:
        await rates.hit(kind, who)
    except RateLimited as exc:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"too many requests: try again in {exc.retry_after_s} s",
            headers={"Retry-After": str(exc.retry_after_s)},
        ) from None


caller = caller_dependency(lambda ctx: staff_credentials(ctx).staff_tokens)
"""The caller of every service's routes: declare it on the router, take ``Who`` or ``Staff``."""
Who = Annotated[Caller, Depends(caller)]


def require_staff(who: Caller) -> Caller:
    """401 unless the caller is staff (a known applicant is 403: signed in, not allowed)."""
    if who.staff_id is not None:
        return who
    if who.applicant_id is not None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this is a staff endpoint")
    raise HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        "staff credential required (Authorization: Bearer <token>)",
        headers={"WWW-Authenticate": "Bearer"},
    )


def require_signed_in(who: Caller) -> Caller:
    """401 unless staff or an applicant."""
    if who.staff_id is None and who.applicant_id is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "sign in (applicant token) or a staff credential required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return who


async def staff_only(who: Who) -> Caller:
    """The dependency behind ``Staff`` (for a router whose every route is staff's)."""
    return require_staff(who)


Staff = Annotated[Caller, Depends(staff_only)]
"""A route for staff only: 401 without a credential, 403 for an applicant."""
