"""Limits on what one HTTP caller may consume (OWASP API4, unrestricted resource consumption).

* **Body size.** ``BodySizeLimit`` is a pure ASGI middleware: a ``Content-Length`` above the
  limit is refused with 413 before the app runs; a body without one (chunked) is counted as
  it is read and refused with 413 once it passes the limit, so no route ever holds more than
  ``<SERVICE>_MAX_BODY_BYTES`` of a request in memory.
* **Rate.** ``RateLimits`` counts requests per caller with the ``limits`` library (sliding
  window counter, in process memory by default): staff by staff id, applicants by their
  pseudonymous id, everyone else (and every refused credential) by client IP. Past the limit
  the answer is 429 with ``Retry-After``. Each service has its own limits
  (``<SERVICE>_RATE_LIMIT_*``), and ``<SERVICE>_RATE_LIMITS=false`` turns them off.

Counting in memory means per process: N replicas allow N times the limit, which is what the
limit is for (a runaway client or a guessing script), not a quota. The default storage,
``async+windowed-memory://`` (``rate_storage``), keeps its upkeep constant per request however
many callers there are. A shared count needs a storage such as ``async+redis://``
(``<SERVICE>_RATE_LIMIT_STORAGE``) and its client library.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

import limits
import limits.aio.strategies
from limits.storage import storage_from_string
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.runtime import rate_storage
from services.runtime.settings import read_settings

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
"""1 MiB: a group-2 application with its certificate chain is a few kB; a settlement batch of
a busy day a few hundred."""


class HttpLimitSettings(BaseSettings):
    """Per service: ``APPLICATIONS_MAX_BODY_BYTES``, ``PAYMENTS_RATE_LIMIT_STAFF`` and so on.

    Rates are ``limits`` strings: ``20/second;600/minute`` (every one of them applies).
    """

    model_config = SettingsConfigDict(extra="ignore")

    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, ge=1024, le=64 * 1024 * 1024)
    rate_limits: bool = Field(default=True, description="false: no rate limits at all.")
    rate_limit_anonymous: str = Field(
        default="250/second;6000/minute",
        description="Per client IP, for callers without a credential or with a refused one.",
    )
    rate_limit_applicant: str = Field(
        default="20/second;600/minute", description="Per applicant (the token's sub)."
    )
    rate_limit_staff: str = Field(default="200/second", description="Per staff id.")
    rate_limit_storage: str = Field(
        default=f"{rate_storage.SCHEME}://",
        description="Where counts are kept (limits storage URI, async+ scheme): the default "
        "counts per process; async+redis://host:6379 shares them across replicas.",
    )

    @field_validator("rate_limit_anonymous", "rate_limit_applicant", "rate_limit_staff")
    @classmethod
    def _rate(cls, value: str) -> str:
        limits.parse_many(value)  # ValueError names the string
        return value


def load_http_limits(service: str) -> HttpLimitSettings:
    """``<SERVICE>_*`` limits; a bad value stops start-up with one line per problem."""
    return read_settings(HttpLimitSettings, service, prefix=f"{service.upper()}_")


# -- body size ----------------------------------------------------------------------------------


class BodyTooLarge(HTTPException):
    """Raised while a body is read; FastAPI's handler turns it into a JSON 413."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request body larger than {max_bytes} bytes")


class BodySizeLimit:
    """ASGI middleware: 413 for a request body over ``max_bytes``, declared or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _send_413(send, self.max_bytes)
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            # Read outside a route (no FastAPI handler on the way): answer here if we still can.
            if started:
                raise
            await _send_413(send, self.max_bytes)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_413(send: Send, max_bytes: int) -> None:
    body = json.dumps({"detail": f"request body larger than {max_bytes} bytes"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


# -- rates --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RateLimited(Exception):
    """A caller is past one of its limits; ``retry_after_s`` until it may try again."""

    retry_after_s: int


class RateLimits:
    """The per-caller limits of one service."""

    def __init__(self, settings: HttpLimitSettings, scope: str) -> None:
        """``scope`` (the service's name) keeps each service's counts apart in a storage the
        services share (``async+redis://``)."""
        self.enabled = settings.rate_limits
        self._scope = scope
        storage: Any = storage_from_string(settings.rate_limit_storage)
        self._limiter = limits.aio.strategies.SlidingWindowCounterRateLimiter(storage)
        self._by_kind = {
            "anonymous": limits.parse_many(settings.rate_limit_anonymous),
            "applicant": limits.parse_many(settings.rate_limit_applicant),
            "staff": limits.parse_many(settings.rate_limit_staff),
        }

    async def hit(self, kind: str, who: str) -> None:
        """Count one request of ``who`` (a ``kind`` of caller); RateLimited when past a limit."""
        if not self.enabled:
            return
        for item in self._by_kind[kind]:
            if not await self._limiter.hit(item, self._scope, kind, who):
                stats = await self._limiter.get_window_stats(item, self._scope, kind, who)
                raise RateLimited(max(1, math.ceil(stats.reset_time - time.time())))
