"""Staff credentials (職員): bearer tokens configured per staff member, shared by every service.

A service's settings declare ``staff_tokens: StaffTokens`` read from ``<SERVICE>_STAFF_TOKENS``
as comma-separated ``staff_id=token`` pairs; a request sends ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BeforeValidator, SecretStr
from pydantic_settings import NoDecode

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
