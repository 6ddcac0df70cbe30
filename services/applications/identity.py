"""Group-2 identity (本人確認): the rules of a signed submission, and what is kept of it.

A signature proves who applied, for this submission, once. An online application for a group-2
procedure carries a detached SHA256withRSA signature over ``canonical_content``: the
applicant's account (the gateway token's ``sub``), a server-issued single-use challenge
(``Challenge``, a few minutes' life) and the application itself; with it, the signer's
certificate chain. This module holds the challenge flow and the vocabulary of the check
(``IdentityRefused`` and its reasons, ``VerifiedIdentity``), without I/O:

1. the challenge: issued to this applicant, not used, not expired (``check_challenge``);
2. the signature, its certification path and the revocation of every certificate on it
   (``signatures.verify``).

What is kept is only what the procedure needs: the verified name, address and birth date, plus
the certificate's serial, issuer, the time and the result of the check. The My Number (個人番号)
is not in a JPKI signature certificate, and nothing here reads, keeps or logs any other
attribute a certificate may carry.
"""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

SIGNING_PURPOSE = "koriyama-cityhall/submit-application/v1"
"""What the signed bytes are for: a signature made for anything else never matches them."""
CHALLENGE_BYTES = 32
CHALLENGE_PATTERN = r"^[A-Za-z0-9_-]{43}$"
"""A challenge as issued: 32 random bytes, base64url without padding."""


class IdentityRefusal(StrEnum):
    """Why a signature was not accepted (``identity.<value>`` in the HTTP answer)."""

    SIGNATURE_REQUIRED = "signature_required"
    SIGN_IN_REQUIRED = "sign_in_required"
    """A signed application binds the applicant's account: it needs the applicant's token."""
    MALFORMED = "malformed"
    CHALLENGE_UNKNOWN = "challenge_unknown"
    CHALLENGE_FOR_ANOTHER_APPLICANT = "challenge_for_another_applicant"
    CHALLENGE_USED = "challenge_used"
    CHALLENGE_EXPIRED = "challenge_expired"
    SIGNATURE_INVALID = "signature_invalid"
    CERTIFICATE_NOT_FOR_SIGNING = "certificate_not_for_signing"
    ISSUER_NOT_A_CA = "issuer_not_a_ca"
    UNKNOWN_CA = "unknown_ca"
    PATH_INVALID = "path_invalid"
    EXPIRED = "expired"
    CERTIFICATE_REVOKED = "certificate_revoked"
    REVOCATION_UNKNOWN = "revocation_unknown"


class IdentityRefused(ValueError):
    """The group-2 identity check failed (HTTP 422 at ``identity``, with the reason; 401 for
    ``sign_in_required``). ``serial`` and ``issuer`` name the signer's certificate when its
    issuer is a trusted CA, else they are None."""

    def __init__(
        self,
        reason: IdentityRefusal,
        message: str,
        *,
        serial: str | None = None,
        issuer: str | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.serial = serial
        self.issuer = issuer


@dataclass(frozen=True)
class VerifiedIdentity:
    """What is kept of a successful check: the verified attributes and the check itself."""

    name: str
    address: str
    birth_date: date | None
    certificate_serial: str
    issuer: str
    checked_at: datetime
    result: str = "verified"


# -- the challenge (チャレンジ): what makes a signature single-use ------------------------------


@dataclass(frozen=True)
class Challenge:
    """A random value the service issues to one applicant, to be signed within its lifetime
    and used by one submission only."""

    value: str
    applicant_id: uuid.UUID
    issued_at: datetime
    expires_at: datetime
    used_at: datetime | None = None


def new_challenge(applicant_id: uuid.UUID, now: datetime, lifetime: timedelta) -> Challenge:
    """A fresh challenge for ``applicant_id``, valid for ``lifetime`` from ``now``."""
    return Challenge(
        value=secrets.token_urlsafe(CHALLENGE_BYTES),
        applicant_id=applicant_id,
        issued_at=now,
        expires_at=now + lifetime,
    )


def check_challenge(found: Challenge | None, applicant_id: uuid.UUID, now: datetime) -> Challenge:
    """The challenge a submission names, if this applicant may use it now.

    Whose it is comes first: a signature captured from another account is refused as such,
    whether or not its owner has used it yet.
    """
    if found is None:
        raise IdentityRefused(
            IdentityRefusal.CHALLENGE_UNKNOWN,
            "no such challenge: get one with POST /identity/challenges and sign again",
        )
    if found.applicant_id != applicant_id:
        raise IdentityRefused(
            IdentityRefusal.CHALLENGE_FOR_ANOTHER_APPLICANT,
            "this challenge was issued to another account: a signature binds the account "
            "that asked for its challenge",
        )
    if found.used_at is not None:
        raise IdentityRefused(
            IdentityRefusal.CHALLENGE_USED,
            "this challenge was already used by a submission: get a new one and sign again",
        )
    if now >= found.expires_at:
        raise IdentityRefused(
            IdentityRefusal.CHALLENGE_EXPIRED,
            f"this challenge expired at {found.expires_at:%Y-%m-%d %H:%M:%S} UTC: get a new "
            "one and sign again",
        )
    return found


def sign_in_required() -> IdentityRefused:
    return IdentityRefused(
        IdentityRefusal.SIGN_IN_REQUIRED,
        "a signed application is filed by the signed-in applicant: send the login gateway's "
        "token (Authorization: Bearer <jwt>) with POST /identity/challenges and the submission",
    )


def canonical_content(
    *, applicant: str, challenge: str, procedure_code: str, channel: str, form: dict[str, Any]
) -> bytes:
    """The bytes a group-2 applicant signs: who, which challenge, and the application.

    The JSON object ``{"applicant":…,"challenge":…,"channel":…,"form":{…},
    "procedure_code":…,"purpose":"koriyama-cityhall/submit-application/v1"}`` with sorted keys,
    no spaces, UTF-8 (not ASCII-escaped); ``applicant`` is the account id (``sub``) in its
    lower-case hyphenated UUID form. The frontend builds the same bytes for the card to sign.

    >>> canonical_content(applicant="5d2c1f0e-8b7a-4c3d-9e1f-2a3b4c5d6e7f", challenge="c",
    ...     procedure_code="KOSEKI_TOHON", channel="online", form={"copies": 1})[:60]
    b'{"applicant":"5d2c1f0e-8b7a-4c3d-9e1f-2a3b4c5d6e7f","challen'
    """
    content = {
        "applicant": applicant,
        "challenge": challenge,
        "channel": channel,
        "form": form,
        "procedure_code": procedure_code,
        "purpose": SIGNING_PURPOSE,
    }
    return json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
