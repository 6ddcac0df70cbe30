"""schemathesis against every service's own OpenAPI: no 5xx, no answer the document does not
declare (status code, content type, body schema), on real PostgreSQL and NATS.

Each service runs in-process (``start_service``) with the city's credentials
(``tests.tokens.city_env``: a staff token for every service and the gateway's applicant JWT
secret) and a little seeded data: an application, a terminal capture with its receipt, a
contact. schemathesis 4 loads the document the app serves (``/openapi.json``, through
``schemathesis.openapi.from_dict``) and generates requests for every operation from it; each
request is sent through the test's ASGI client, on the same event loop as the service (the
loop its database pool lives on), as one of three callers in turn: anonymous, an applicant
(the seeded one), a clerk. Path parameters named like a seeded object get its id in half of
the requests, so reads reach real rows. Every answer goes through schemathesis' checks:
``not_a_server_error``, ``status_code_conformance``, ``content_type_conformance``,
``response_headers_conformance``, ``response_schema_conformance``.

``SCHEMATHESIS_EXAMPLES`` sets the requests per operation (CI: 12); all failures of a service
are reported together.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.payments.handlers.registry import register_terminal
from tests import tokens
from tests.integration.helpers import wait_for
from tests.integration.payments.helpers import terminal_publishes, transaction

EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "12"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
SERVICES = ["applications", "payments", "notifications", "reporting"]
APPLICANT_ID = uuid.UUID("5d2c1f0e-8b7a-4c3d-9e1f-2a3b4c5d6e7f")


async def seed(name: str, service: Any, js: Any, namespace: str) -> dict[str, str]:
    """Real objects for the reads to find, by path parameter name."""
    applicant = tokens.applicant(APPLICANT_ID)
    if name == "applications":
        answer = await service.http.post(
            "/applications",
            json={"procedure_code": "SHIMIN_NO_KOE", "form": {"subject": "公園", "body": "ベンチ"}},
            headers={**applicant, "Idempotency-Key": str(uuid.uuid4())},
        )
        assert answer.status_code == 201, answer.text
        return {"application_id": answer.json()["id"], "code": "JUMINHYO"}
    if name == "payments":
        terminal = await register_terminal(service.pool, "shiminka")
        await terminal_publishes(js, namespace, transaction(terminal.terminal_id, "T01-000001"))

        async def captured() -> Any:
            return await service.pool.fetchrow("SELECT payment_id, receipt_number FROM payments")

        row = await wait_for(captured)
        return {"payment_id": str(row["payment_id"]), "receipt_number": row["receipt_number"]}
    if name == "notifications":
        answer = await service.http.put(
            f"/contacts/{APPLICANT_ID}",
            json={"email": "taro@example.jp", "language": "ja"},
            headers=applicant,
        )
        assert answer.status_code == 200, answer.text
        return {"applicant_id": str(APPLICANT_ID), "name": "application-acknowledgement"}
    return {}


CALLERS: list[tuple[str, dict[str, str]]] = [
    ("anonymous", {}),
    ("applicant", tokens.applicant(APPLICANT_ID)),
    ("staff", tokens.STAFF),
]


def generated_cases(operation: Any) -> list[Any]:
    """``EXAMPLES`` requests for one operation, as schemathesis generates them."""
    cases: list[Any] = []

    @settings(
        max_examples=EXAMPLES,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def collect(case: Any) -> None:
        cases.append(case)

    collect()
    return cases


def describe(failure: BaseException) -> str:
    """One line per failed check: its kind and message."""
    parts = failure.exceptions if isinstance(failure, BaseExceptionGroup) else (failure,)
    return "; ".join(
        f"{type(p).__name__}: {' '.join(str(getattr(p, 'message', p)).split())[:300]}"
        for p in parts
    )


async def send(client: httpx.AsyncClient, case: Any, caller: dict[str, str]) -> httpx.Response:
    kwargs = case.as_transport_kwargs(base_url=str(client.base_url))
    headers = {k: v for k, v in kwargs["headers"].items() if k.lower() != "authorization"}
    headers.update(caller)
    body: dict[str, Any] = {}
    if "json" in kwargs:
        body["content"] = json.dumps(kwargs["json"]).encode()
    elif "data" in kwargs:
        body["content"] = kwargs["data"]
    return await client.request(
        kwargs["method"],
        kwargs["url"],
        params=kwargs.get("params"),
        headers=headers,
        cookies=kwargs.get("cookies") or None,
        **body,
    )


@pytest.mark.parametrize("name", SERVICES)
async def test_every_operation_answers_as_its_openapi_declares(
    name: str, start_service: Any, js: Any, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens.city_env(monkeypatch, PAYMENT_PROVIDER_SECRET="schemathesis-provider-secret-0123")
    service = await start_service(name)
    seeded = await seed(name, service, js, namespace)
    document = (await service.http.get("/openapi.json")).json()
    schema = schemathesis.openapi.from_dict(document)

    started = time.monotonic()
    failures: list[str] = []
    sent = 0
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == sum(len(ops) for ops in document["paths"].values())
    for operation in operations:
        for i, case in enumerate(generated_cases(operation)):
            who, caller = CALLERS[i % len(CALLERS)]
            for param in case.path_parameters or {}:
                if param in seeded and i % 2 == 0:
                    case.path_parameters[param] = seeded[param]
            sent += 1
            try:
                response = await send(service.http, case, caller)
            except Exception as crash:  # the ASGI client re-raises what would be a 500
                failures.append(f"{operation.label} as {who} -> 500 {crash!r}\n  {case!r}")
                continue
            try:
                case.validate_response(
                    response, checks=CHECKS, headers=dict(response.request.headers)
                )
            except (Exception, BaseExceptionGroup) as failure:  # all failures are listed
                failures.append(
                    f"{operation.label} as {who} -> {response.status_code} "
                    f"{response.text[:200]!r}\n  {describe(failure)}"
                )
    elapsed = time.monotonic() - started
    print(f"{name}: {len(operations)} operations, {sent} requests, {elapsed:.1f} s")
    assert sent >= len(operations), "every operation was exercised"
    assert not failures, f"{len(failures)} of {sent} answers break the OpenAPI:\n" + "\n".join(
        failures
    )
