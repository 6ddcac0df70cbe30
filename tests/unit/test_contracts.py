"""The contracts: exported schemas up to date, AsyncAPI valid, examples valid, envelope sound."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import unquote

import jsonschema
import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

import cityhall.export as export_module
import contracts
from cityhall.export import (
    ASYNCAPI_FILE,
    COMPONENT_KEY,
    SCHEMAS_DIR,
    DocumentedConsumer,
    build_asyncapi,
    check,
    command_models,
    declared_consumers,
    event_schemas,
    export,
    model_title,
    subject_matches,
)
from contracts import ALL_EVENTS, Envelope, EnvelopeError, Event, RawEvent
from contracts.envelope import CE_ID, CE_TIME, CE_TYPE, NATS_MSG_ID, event_examples
from contracts.subjects import APPLICATIONS, DEFAULT_NAMESPACE, absolute, dlq_subject

CONTRACTS_DIR = Path(contracts.__file__).parent
ASYNCAPI_SCHEMA = Path(__file__).parent.parent / "fixtures" / "asyncapi" / "3.0.0-without-id.json"

EXAMPLES = [
    pytest.param(model, example, id=f"{model_title(model)}[{i}]")
    for model in (*ALL_EVENTS, *command_models())
    for i, example in enumerate(event_examples(model))  # type: ignore[arg-type]
]


@pytest.fixture(scope="module")
def asyncapi() -> dict[str, Any]:
    document: dict[str, Any] = json.loads((CONTRACTS_DIR / ASYNCAPI_FILE).read_text("utf-8"))
    return document


@pytest.fixture(scope="module")
def asyncapi_validator() -> jsonschema.Draft7Validator:
    schema = json.loads(ASYNCAPI_SCHEMA.read_text("utf-8"))
    assert schema["$schema"].startswith("http://json-schema.org/draft-07/schema")
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def resolve(document: dict[str, Any], ref: str) -> Any:
    """Follow a local JSON pointer (``#/a/b``) inside ``document``."""
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[unquote(part).replace("~1", "/").replace("~0", "~")]
    return node


def refs(node: Any) -> list[str]:
    """Every ``$ref`` value in ``node``."""
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


def example_of(model: type[Event]) -> Event:
    examples = event_examples(model)
    assert examples, f"{model.__name__} declares no example in its JSON Schema"
    return model.model_validate(examples[0])


# --- the export ---------------------------------------------------------------------------


def test_committed_export_is_up_to_date() -> None:
    stale = check(CONTRACTS_DIR)
    assert stale == [], (
        f"contracts/ differs from the models for {', '.join(stale)}: "
        "run `cityhall contracts export` and commit the result"
    )


def test_export_writes_deterministically_and_check_spots_drift(tmp_path: Path) -> None:
    (tmp_path / SCHEMAS_DIR).mkdir()
    (tmp_path / SCHEMAS_DIR / "Removed.v1.json").write_text("{}\n")

    written = export(tmp_path)

    assert tmp_path / ASYNCAPI_FILE in written
    assert {p.name for p in (tmp_path / SCHEMAS_DIR).iterdir()} == set(event_schemas())
    assert check(tmp_path) == []
    first = {p: p.read_bytes() for p in written}
    export(tmp_path)
    assert {p: p.read_bytes() for p in written} == first
    text = (tmp_path / ASYNCAPI_FILE).read_text("utf-8")
    assert text.endswith("}\n")
    assert "郡山" in text  # ensure_ascii=False

    schema_file = tmp_path / SCHEMAS_DIR / f"{model_title(ALL_EVENTS[0])}.json"
    schema_file.write_text(schema_file.read_text("utf-8").replace('"type"', '"kind"', 1))
    (tmp_path / SCHEMAS_DIR / "Stale.json").write_text("{}\n")
    assert check(tmp_path) == sorted(
        [f"{SCHEMAS_DIR}/{schema_file.name}", f"{SCHEMAS_DIR}/Stale.json"]
    )


def test_every_event_and_command_has_a_schema_file() -> None:
    schemas = event_schemas()
    for event in ALL_EVENTS:
        schema = schemas[f"{model_title(event)}.json"]
        assert schema["$id"].endswith(f"{model_title(event)}.json")
        assert schema["x-cloudevents-type"] == event.event_type
        assert schema["x-nats-subject"] == event.subject
        assert schema["additionalProperties"] is False
    for command in command_models():
        assert f"{model_title(command)}.json" in schemas
    assert "SubmitApplication.json" in schemas


# --- AsyncAPI -----------------------------------------------------------------------------


def test_asyncapi_is_generated_by_faststream_and_matches_the_build(
    asyncapi: dict[str, Any],
) -> None:
    assert asyncapi == json.loads(json.dumps(build_asyncapi()))
    assert asyncapi["asyncapi"] == "3.0.0"
    assert asyncapi["info"]["title"] == "cityhall"
    assert asyncapi["info"]["version"] == "0.1.0"
    assert "Koriyama" in asyncapi["info"]["description"]


def test_asyncapi_validates_against_the_official_schema(
    asyncapi: dict[str, Any], asyncapi_validator: jsonschema.Draft7Validator
) -> None:
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in asyncapi_validator.iter_errors(asyncapi)
    ]
    assert errors == []


def test_asyncapi_component_keys_follow_the_spec(asyncapi: dict[str, Any]) -> None:
    # Components whose key does not match are skipped by the official JSON Schema
    # (patternProperties), so they must all match for the validation to cover them.
    for section, entries in asyncapi["components"].items():
        bad = [key for key in entries if not COMPONENT_KEY.match(key)]
        assert bad == [], f"components.{section} keys break the AsyncAPI key rule: {bad}"


def test_asyncapi_references_resolve(asyncapi: dict[str, Any]) -> None:
    found = refs(asyncapi)
    assert found
    for ref in found:
        resolve(asyncapi, ref)


def _without_info(doc: dict[str, Any]) -> None:
    del doc["info"]


def _publish_action(doc: dict[str, Any]) -> None:
    next(iter(doc["operations"].values()))["action"] = "publish"  # AsyncAPI 2 wording


def _bad_payload_schema(doc: dict[str, Any]) -> None:
    # Deep inside: components/schemas -> AsyncAPI Schema -> embedded draft-07 meta-schema.
    next(iter(doc["components"]["schemas"].values()))["type"] = "text"


def _bad_header_schema(doc: dict[str, Any]) -> None:
    next(iter(doc["components"]["messages"].values()))["headers"]["required"] = "ce-id"


def _messages_as_list(doc: dict[str, Any]) -> None:
    channel = next(iter(doc["channels"].values()))
    channel["messages"] = list(channel["messages"].values())


def _unknown_channel_field(doc: dict[str, Any]) -> None:
    next(iter(doc["channels"].values()))["subject"] = "cityhall.>"


@pytest.mark.parametrize(
    ("breakage", "where"),
    [
        (_without_info, ""),
        (_publish_action, "operations/"),
        (_bad_payload_schema, "components/schemas/"),
        (_bad_header_schema, "components/messages/"),
        (_messages_as_list, "channels/"),
        (_unknown_channel_field, "channels/"),
    ],
)
def test_a_broken_asyncapi_document_fails_validation(
    asyncapi: dict[str, Any],
    asyncapi_validator: jsonschema.Draft7Validator,
    breakage: Any,
    where: str,
) -> None:
    broken = copy.deepcopy(asyncapi)
    breakage(broken)
    errors = list(asyncapi_validator.iter_errors(broken))
    assert errors, f"{breakage.__name__} went unnoticed"
    paths = ["/".join(map(str, e.absolute_path)) for e in errors]
    assert any(p.startswith(where) for p in paths), paths


def test_every_subject_is_a_channel(asyncapi: dict[str, Any]) -> None:
    addresses = {channel["address"] for channel in asyncapi["channels"].values()}
    wanted = {absolute(DEFAULT_NAMESPACE, e.subject) for e in ALL_EVENTS}
    consumers = declared_consumers()
    assert consumers, "no service declares a consumer"
    for consumer in consumers:
        wanted |= {absolute(DEFAULT_NAMESPACE, s) for s in consumer.subjects}
    wanted.add(absolute(DEFAULT_NAMESPACE, dlq_subject(">")))
    assert wanted <= addresses, f"missing channels: {sorted(wanted - addresses)}"


def _payload_titles(document: dict[str, Any], channel: dict[str, Any]) -> set[str]:
    titles = set()
    for message_ref in channel["messages"].values():
        payload = resolve(document, message_ref["$ref"])["payload"]
        for item in payload.get("oneOf", [payload]):
            titles.add(resolve(document, item["$ref"])["title"])
    return titles


def test_publishers_and_subscribers_carry_their_event_schemas(asyncapi: dict[str, Any]) -> None:
    operations = asyncapi["operations"]
    for event in ALL_EVENTS:
        op = operations[model_title(event)]
        assert op["action"] == "send"
        channel = resolve(asyncapi, op["channel"]["$ref"])
        assert channel["address"] == absolute(DEFAULT_NAMESPACE, event.subject)
        assert _payload_titles(asyncapi, channel) == {model_title(event)}
    for consumer in declared_consumers():
        receiving = [
            resolve(asyncapi, op["channel"]["$ref"])
            for key, op in operations.items()
            if key.startswith(f"{consumer.service}.{consumer.durable}")
        ]
        assert receiving, f"no operation for consumer {consumer.durable}"
        handled = set()
        for channel in receiving:
            handled |= _payload_titles(asyncapi, channel)
        assert handled == {model_title(e) for e in consumer.events}


class _CertificateIssuedV1(Event):
    """A certificate was issued (test-only event)."""

    event_type: ClassVar[str] = "jp.koriyama.cityhall.applications.CertificateIssued.v1"
    subject: ClassVar[str] = "applications.certificate.issued.v1"
    model_config = ConfigDict(extra="forbid", frozen=True, title="CertificateIssued.v1")

    certificate_id: str

    def aggregate_id(self) -> str:
        return self.certificate_id


def test_consumers_of_several_events_and_subjects_are_documented(
    monkeypatch: pytest.MonkeyPatch, asyncapi_validator: jsonschema.Draft7Validator
) -> None:
    # Today one consumer takes one event; this is what the document looks like as services grow.
    events = (ALL_EVENTS[0], _CertificateIssuedV1)
    monkeypatch.setattr(export_module, "event_models", lambda: events)
    monkeypatch.setattr(
        export_module,
        "declared_consumers",
        lambda: [
            DocumentedConsumer(
                "notifications",
                "notifications_applications",
                APPLICATIONS,
                ("applications.application.>", _CertificateIssuedV1.subject),
                events,
            ),
            DocumentedConsumer(
                "reporting", "reporting_all", APPLICATIONS, ("applications.>",), events
            ),
        ],
    )
    document = build_asyncapi()

    assert list(asyncapi_validator.iter_errors(document)) == []
    channels = document["channels"]
    assert _payload_titles(document, channels["notifications.notifications_applications.1"]) == {
        model_title(events[0])
    }
    assert _payload_titles(document, channels["notifications.notifications_applications.2"]) == {
        "CertificateIssued.v1"
    }
    everything = channels["reporting.reporting_all"]
    assert _payload_titles(document, everything) == {model_title(e) for e in events}
    (message_ref,) = everything["messages"].values()
    ce_type = resolve(document, message_ref["$ref"])["headers"]["properties"][CE_TYPE]
    assert ce_type["enum"] == [e.event_type for e in events]


def test_dlq_channel_documents_the_dead_letter_headers(asyncapi: dict[str, Any]) -> None:
    from services.runtime import dlq

    channel = asyncapi["channels"]["dlq"]
    assert channel["address"] == f"{DEFAULT_NAMESPACE}.dlq.>"
    (message_ref,) = channel["messages"].values()
    message = resolve(asyncapi, message_ref["$ref"])
    payload = resolve(asyncapi, message["payload"]["$ref"])
    assert payload["type"] == "string"
    assert payload["format"] == "binary"
    headers = [getattr(dlq, n) for n in dir(dlq) if str(getattr(dlq, n)).startswith("Cityhall-")]
    assert headers
    for header in headers:
        assert header in message["headers"]["properties"]
        assert header in message["description"]


def test_published_envelope_headers_match_the_documented_headers(
    asyncapi: dict[str, Any],
) -> None:
    for event in ALL_EVENTS:
        channel = asyncapi["channels"][model_title(event)]
        (message_ref,) = channel["messages"].values()
        header_schema = resolve(asyncapi, message_ref["$ref"])["headers"]
        envelope = Envelope.new(example_of(event), source="/cityhall/tests")
        headers = {
            **envelope.headers(),
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        }
        jsonschema.Draft7Validator(header_schema).validate(headers)
        bad = {**headers, CE_TYPE: f"{event.event_type}.other"}
        assert not jsonschema.Draft7Validator(header_schema).is_valid(bad)


# --- examples and models ------------------------------------------------------------------


def test_every_event_declares_an_example() -> None:
    for event in ALL_EVENTS:
        assert event_examples(event), f"{event.__name__} declares no example"


@pytest.mark.parametrize(("model", "example"), EXAMPLES)
def test_examples_validate_with_pydantic_and_the_exported_schema(
    model: type[BaseModel], example: dict[str, Any]
) -> None:
    model.model_validate(example)
    model.model_validate_json(json.dumps(example))
    exported = json.loads((CONTRACTS_DIR / SCHEMAS_DIR / f"{model_title(model)}.json").read_text())
    validator = jsonschema.Draft202012Validator(exported, format_checker=jsonschema.FormatChecker())
    jsonschema.Draft202012Validator.check_schema(exported)
    validator.validate(example)
    assert not validator.is_valid({**example, "unexpected": 1})


@pytest.mark.parametrize("event", ALL_EVENTS, ids=model_title)
def test_events_refuse_extra_fields(event: type[Event]) -> None:
    example = event_examples(event)[0]
    with pytest.raises(ValidationError, match="unexpected"):
        event.model_validate({**example, "unexpected": "field"})
    with pytest.raises(ValidationError):
        event.model_validate_json(json.dumps({**example, "unexpected": "field"}))


@pytest.mark.parametrize("event", ALL_EVENTS, ids=model_title)
def test_event_subjects_and_types(event: type[Event]) -> None:
    assert event.event_type.endswith(f".v{event.version}")
    assert event.subject.endswith(f".v{event.version}")
    assert event.event_type.startswith("jp.koriyama.cityhall.")
    assert contracts.EVENT_TYPES[event.event_type] is event


def test_subject_matching() -> None:
    assert subject_matches("applications.>", "applications.application.submitted.v1")
    assert not subject_matches("applications.>", "applications")
    assert subject_matches("applications.*.submitted.v1", "applications.x.submitted.v1")
    assert not subject_matches("applications.*", "applications.x.y")
    assert not subject_matches("payments.>", "applications.x")


# --- envelope -----------------------------------------------------------------------------


@pytest.mark.parametrize("event", ALL_EVENTS, ids=model_title)
def test_envelope_round_trip(event: type[Event]) -> None:
    data = example_of(event)
    sent = Envelope.new(data, source="/cityhall/tests", time=datetime(2026, 11, 24, tzinfo=UTC))
    headers = sent.headers()

    assert headers[NATS_MSG_ID] == headers[CE_ID] == sent.id
    received: Envelope[Any] = RawEvent.from_headers(headers).parse(event, sent.body())

    assert received.data == data
    assert received.data.model_dump() == data.model_dump()
    assert received.id == sent.id
    assert received.type == event.event_type
    assert received.source == sent.source
    assert received.time == sent.time
    assert received.subject == data.aggregate_id()


def test_missing_ce_type_is_refused() -> None:
    headers = Envelope.new(example_of(ALL_EVENTS[0]), source="/cityhall/tests").headers()
    del headers[CE_TYPE]
    with pytest.raises(EnvelopeError, match="ce-type"):
        RawEvent.from_headers(headers)


def test_naive_ce_time_is_refused() -> None:
    headers = Envelope.new(example_of(ALL_EVENTS[0]), source="/cityhall/tests").headers()
    headers[CE_TIME] = "2026-11-24T09:00:00"
    with pytest.raises(EnvelopeError, match="ce-time"):
        RawEvent.from_headers(headers)


def test_invalid_body_names_the_field() -> None:
    event = ALL_EVENTS[0]
    sent = Envelope.new(example_of(event), source="/cityhall/tests")
    body = json.loads(sent.body())
    body["unexpected"] = 1
    with pytest.raises(EnvelopeError, match="unexpected"):
        RawEvent.from_headers(sent.headers()).parse(event, json.dumps(body).encode())


def test_an_events_source_is_the_producer_its_type_names() -> None:
    # One way to set the source: Envelope.new takes it from the type (ServiceContext.source agrees).
    for model in ALL_EVENTS:
        producer = model.event_type.split(".")[3]
        assert model.source() == f"/cityhall/{producer}"
    model = ALL_EVENTS[0]
    event = model.model_validate(event_examples(model)[0])
    assert Envelope.new(event).source == "/cityhall/applications"
