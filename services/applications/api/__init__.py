"""HTTP routes of the applications service: parse, call a handler, map errors to HTTP.

Who is calling (``services.runtime.auth``), always ``Authorization: Bearer <token>``:
* staff (職員) with their opaque token (``APPLICATIONS_STAFF_TOKENS``);
* a citizen with the JWT the city's login gateway signed (``sub``: the pseudonymous id of
  the citizen's account). An applicant sees and acts on only their own applications;
* the public: the catalog, certificate verification, and group-1 online submissions (記名:
  the typed name suffices; nobody but staff can look such an application up afterwards).

Every POST takes an optional ``Idempotency-Key`` header: the same key and request replay the
first response; the same key with another request is refused (422).

One module per route family (identity, applications, certificates, catalog), each with its
routes and the views they answer; ``deps`` holds what they share, the error mapping included.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from services.applications.api import applications, catalog, certificates, identity
from services.runtime.auth import caller
from services.runtime.http_errors import ERROR_RESPONSES, no_nul_characters

router = APIRouter(
    dependencies=[Depends(caller), Depends(no_nul_characters)],
    responses=ERROR_RESPONSES,
)
"""Every route identifies its caller and counts it against the caller's rate limit."""
for family in (identity, applications, certificates, catalog):
    router.include_router(family.router)
