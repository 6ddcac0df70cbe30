"""Finds full card numbers (PAN) and My Numbers (個人番号) in what the platform keeps: rows,
stream messages, log lines. The test suite fills one ``AtRestScan`` as each test tears down
(``tests/conftest.py``); ``test_no_card_or_my_number_at_rest.py`` reads it last.

What counts as a finding:

* a **card number**: 13 to 19 digits, written as one run or in groups as printed on a card
  (``4111 1111 1111 1111``, ``3782-822463-10005``), that pass the Luhn check and start with a
  brand's IIN (Visa 4, Mastercard 51-55 and 2221-2720, JCB 3528-3589, Amex 34/37, Diners 36/38
  and 300-305, Discover 6011/65). A run inside a longer digit run, or glued to letters (a hex
  id, a token), is not one; a masked PAN (``************1111``, ``411111******1111``) is not one;
* a **My Number**: 12 digits with a valid check digit (番号法施行令 art. 8, the service's own
  ``is_my_number``) that is one of the numbers the tests send, or follows a key naming it
  (``my_number``, ``kojin_bango``, ``個人番号`` ...). Any 12 digits pass the check one time in
  ten, so a bare valid run (a timestamp, a sequence) is not flagged;
* a **sent value**: any of ``SENT_VALUES`` (what the tests submit), verbatim, wherever it is;
* any of the above inside a PEM certificate found in the text (its subject is decoded): a
  stored certificate that carries the number would otherwise hide it in base64.

A finding keeps where it was and a masked excerpt; the full value is never kept or printed.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import threading
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.applications.forms import is_my_number

# --- what the tests send --------------------------------------------------------------------

# Card numbers the tests put on a real path (terminal messages), in the form they send them.
SENT_CARD_NUMBERS: tuple[str, ...] = (
    "4111 1111 1111 1111",  # tests/integration/payments/test_terminal_ingestion.py (item text)
    "4111111111111111",  # tests/security/test_no_card_or_my_number_at_rest.py (item text)
    "3530-1113-3330-0000",  # tests/security/test_no_card_or_my_number_at_rest.py (card.token)
)
# My Numbers (valid check digit) the tests send: in a certificate's subject serialNumber, in a
# form answer, in an applicant's request.
SENT_MY_NUMBERS: tuple[str, ...] = (
    "123456789018",  # tests/integration/applications/test_identity.py, and the final test
)
SENT_VALUES: tuple[str, ...] = SENT_CARD_NUMBERS + SENT_MY_NUMBERS
# Look-alikes the tests also send that are neither (kept out of SENT_VALUES, on purpose):
# "123456789012" (test_inbox: an extra field "my_number", check digit wrong: it is in the
# applications stream and its dead letter by design) and "1" * 12 (notifications refuses it).

# --- the rules ------------------------------------------------------------------------------

# A maximal run of digits, single spaces or hyphens between them, at least 12 digits long.
_RUN = re.compile(r"(?<!\d)(?<!\d[ -])\d(?:[ -]?\d){11,}(?![ -]?\d)")
_GROUP = re.compile(r"\d+")
_IDENTIFIER_CHAR = re.compile(r"[A-Za-z]")
_MY_NUMBER_KEY = re.compile(
    r"my[ _.-]?number|kojin[ _.-]?bango|individual[ _.-]?number|個人番号|マイナンバー",
    re.IGNORECASE,
)
_KEY_DISTANCE = 40  # characters between a key and its value ("my_number": "...")
_PEM = re.compile(
    r"-----BEGIN CERTIFICATE-----(?P<body>[A-Za-z0-9+/=\s\\n]+?)-----END CERTIFICATE-----"
)
_MAX_GROUPS_IN_PRINTED_PAN = 5  # 4-4-4-4-3 is the longest printed layout
# A W3C trace context (``traceparent``: version-trace id-span id-flags): random hex ids by
# format. A span id is 16 hex digits, all of them decimal once in ~1,800, and some of those
# pass an IIN and the Luhn check: a stream of the reliability tests (tens of thousands of
# messages, each with its traceparent) once held one. Blanked before the scan.
_TRACEPARENT = re.compile(r"\b[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}\b")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def has_card_iin(digits: str) -> bool:
    """Starts like a card of a brand the city takes (or Discover)."""
    two, four = int(digits[:2]), int(digits[:4])
    return (
        digits[0] == "4"
        or 51 <= two <= 55
        or 2221 <= four <= 2720
        or 3528 <= four <= 3589
        or two in (34, 37, 36, 38, 65)
        or 300 <= int(digits[:3]) <= 305
        or digits.startswith("6011")
    )


def is_card_number(digits: str) -> bool:
    return (
        13 <= len(digits) <= 19
        and digits.isascii()
        and digits.isdigit()
        and has_card_iin(digits)
        and luhn_ok(digits)
    )


def mask(value: str) -> str:
    """Digits but the last four replaced: ``************1111``."""
    digits = [i for i, ch in enumerate(value) if ch.isdigit()]
    keep = set(digits[-4:])
    return "".join("*" if ch.isdigit() and i not in keep else ch for i, ch in enumerate(value))


@dataclass(frozen=True)
class Hit:
    kind: str  # "card number", "My Number", "sent value"
    excerpt: str  # masked, with some context


_SENT_DIGITS = frozenset(re.sub(r"\D", "", v) for v in SENT_VALUES)


def _excerpt(text: str, start: int, end: int) -> str:
    before, after = text[max(0, start - 30) : start], text[end : end + 30]
    context = _RUN.sub(lambda m: mask(m.group()), before + "\x00" + after)
    left, _, right = context.partition("\x00")
    return f"{left}[{mask(text[start:end])}]{right}".replace("\n", " ")


def _windows(run: str) -> Iterable[tuple[int, int, list[str], str]]:
    """(start, end, groups, separator) for every stretch of whole digit groups of ``run``
    joined by one kind of separator (a single group too)."""
    groups = list(_GROUP.finditer(run))
    for i, first in enumerate(groups):
        sep = ""
        digits = 0
        for j in range(i, min(len(groups), i + 8)):
            g = groups[j]
            if j > i:
                between = run[groups[j - 1].end() : g.start()]
                if j == i + 1:
                    sep = between
                elif between != sep:
                    break
            digits += g.end() - g.start()
            if digits > 19:
                break
            yield first.start(), g.end(), [x.group() for x in groups[i : j + 1]], sep


def _printed_like_a_card(groups: Sequence[str]) -> bool:
    if len(groups) == 1:
        return True
    return (
        len(groups) <= _MAX_GROUPS_IN_PRINTED_PAN
        and len(groups[0]) == 4
        and all(3 <= len(g) <= 7 for g in groups)
    )


def find_sensitive(data: str | bytes) -> list[Hit]:
    """Every card number, My Number and sent value in ``data`` (text, or bytes as UTF-8)."""
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    text = _TRACEPARENT.sub(lambda m: "t" * len(m.group()), text)  # same length: same places
    hits: list[Hit] = []
    for m in _RUN.finditer(text):
        run, base = m.group(), m.start()
        taken = -1  # windows overlapping a hit are the same number again
        for start, end, groups, _sep in _windows(run):
            if start < taken:
                continue
            digits = "".join(groups)
            a, b = base + start, base + end
            if digits in _SENT_DIGITS:
                hits.append(Hit("sent value", _excerpt(text, a, b)))
                taken = end
                continue
            glued = (a > 0 and _IDENTIFIER_CHAR.match(text[a - 1])) or (
                b < len(text) and _IDENTIFIER_CHAR.match(text[b])
            )
            if glued or not _printed_like_a_card(groups):
                continue
            if is_card_number(digits):
                hits.append(Hit("card number", _excerpt(text, a, b)))
                taken = end
            elif (
                len(digits) == 12
                and is_my_number(digits)
                and _MY_NUMBER_KEY.search(text, max(0, a - _KEY_DISTANCE), a)
            ):
                hits.append(Hit("My Number", _excerpt(text, a, b)))
                taken = end
    if "-----BEGIN CERTIFICATE" in text:
        hits.extend(_in_certificates(text))
    return hits


def _in_certificates(text: str) -> list[Hit]:
    from cryptography import x509

    hits = []
    for m in _PEM.finditer(text):
        body = re.sub(r"\\n|\s", "", m.group("body"))
        try:
            cert = x509.load_der_x509_certificate(base64.b64decode(body))
            subject = cert.subject.rfc4514_string()
        except ValueError:
            continue
        # An attribute's value is what the holder's card says: a serialNumber that is a valid
        # My Number is one, with or without a key naming it.
        for attr in cert.subject:
            digits = re.sub(r"[ -]", "", str(attr.value))
            if digits in _SENT_DIGITS or is_my_number(digits) or is_card_number(digits):
                hits.append(Hit("certificate subject", mask(subject)))
    return hits


# --- the session's registry -----------------------------------------------------------------

# The test that reads the registry; tests/conftest.py orders it after every other test.
AT_REST_FINAL_TEST = "tests/security/test_no_card_or_my_number_at_rest.py"


@dataclass(frozen=True)
class Finding:
    test: str
    where: str  # "t0123abcd_payments.outbox", "stream T0123ABCD_DLQ seq 3", a log file
    kind: str
    excerpt: str

    def __str__(self) -> str:
        return f"{self.kind} in {self.where} (test {self.test}): {self.excerpt}"


@dataclass
class AtRestScan:
    """What the session scanned, and what it found. Filled as tests tear down."""

    current_test: str = "(session)"
    rows: int = 0
    tables: int = 0
    messages: int = 0
    streams: int = 0
    log_files: int = 0
    log_bytes: int = 0
    log_records: int = 0
    documents: int = 0  # PDFs in bytea columns, their text extracted
    seconds: float = 0.0
    findings: list[Finding] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _scanned_files: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def scan(self, where: str, data: str | bytes, test: str | None = None) -> None:
        for hit in find_sensitive(data):
            with self._lock:
                self.findings.append(
                    Finding(test or self.current_test, where, hit.kind, hit.excerpt)
                )

    async def guarded(self, what: str, scanning: Awaitable[None]) -> None:
        """Run a scan at a fixture's teardown: a scan that fails (the server was killed by the
        test) is recorded, and the teardown goes on."""
        try:
            await scanning
        except Exception as exc:
            self.errors.append(f"{self.current_test}: {what}: {exc!r}")

    def summary(self) -> str:
        return (
            f"{self.rows} rows in {self.tables} tables, {self.documents} PDF documents, "
            f"{self.messages} messages in {self.streams} streams, {self.log_files} log files "
            f"({self.log_bytes} bytes), {self.log_records} in-process log records; "
            f"{self.seconds:.2f} s scanning; {len(self.findings)} findings, "
            f"{len(self.errors)} scan errors"
        )

    # -- PostgreSQL ---------------------------------------------------------------------

    async def scan_schemas(self, conn: Any, like: str, test: str | None = None) -> None:
        """Every row of every table in the schemas matching ``like`` (a LIKE pattern):
        as JSON (column names are keys), bytea columns apart (raw, and a PDF's text)."""
        import time

        started = time.perf_counter()
        tables = await conn.fetch(
            """SELECT n.nspname AS schema, c.relname AS table,
                      coalesce(array_agg(a.attname::text ORDER BY a.attnum)
                               FILTER (WHERE a.atttypid = 'bytea'::regtype), '{}') AS bytea
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
                                        AND NOT a.attisdropped
               WHERE n.nspname LIKE $1 AND c.relkind IN ('r', 'p')
               GROUP BY 1, 2""",
            like,
        )
        if tables:
            parts = []
            for i, t in enumerate(tables):
                name = f'"{t["schema"]}"."{t["table"]}"'
                drop = "".join(f" - '{col}'" for col in t["bytea"])
                parts.append(f"SELECT {i} AS i, (to_jsonb(t){drop})::text AS row FROM {name} t")
            rows = await conn.fetch(" UNION ALL ".join(parts))
            for r in rows:
                t = tables[r["i"]]
                self.scan(f"{t['schema']}.{t['table']}", r["row"], test)
            self.rows += len(rows)
            self.tables += len(tables)
            for t in tables:
                for col in t["bytea"]:
                    name = f'"{t["schema"]}"."{t["table"]}"'
                    for r in await conn.fetch(f'SELECT "{col}" AS v FROM {name}'):
                        self._scan_bytes(f"{t['schema']}.{t['table']}.{col}", r["v"], test)
        self.seconds += time.perf_counter() - started

    def _scan_bytes(self, where: str, value: bytes | None, test: str | None) -> None:
        if not value:
            return
        if value.startswith(b"%PDF"):
            from pypdf import PdfReader

            try:
                reader = PdfReader(io.BytesIO(value))
                text = "\n".join(page.extract_text() or "" for page in reader.pages)
                text += "\n" + json.dumps(reader.metadata or {}, default=str)
            except Exception as exc:  # a document we cannot read is noted, not a pass
                self.errors.append(f"{where}: PDF not readable: {exc!r}")
            else:
                self.documents += 1
                self.scan(f"{where} (PDF text)", text, test)
        self.scan(where, value, test)

    # -- JetStream ----------------------------------------------------------------------

    async def scan_streams(self, js: Any, names: Sequence[str], test: str | None = None) -> None:
        """Every message (subject, headers, data) of the streams ``names``."""
        import time
        import uuid

        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        started = time.perf_counter()
        for stream in names:
            info = await js.stream_info(stream)
            self.streams += 1
            remaining = int(info.state.messages)
            if not remaining:
                continue
            name = f"scan{uuid.uuid4().hex[:12]}"
            await js.add_consumer(
                stream,
                ConsumerConfig(
                    name=name,
                    ack_policy=AckPolicy.NONE,
                    deliver_policy=DeliverPolicy.ALL,
                    inactive_threshold=30.0,
                    mem_storage=True,
                ),
            )
            sub = await js.pull_subscribe_bind(consumer=name, stream=stream)
            try:
                while remaining > 0:
                    try:
                        batch = await sub.fetch(min(remaining, 1000), timeout=2.0)
                    except TimeoutError:
                        break  # fewer than counted (deleted meanwhile)
                    for msg in batch:
                        seq = msg.metadata.sequence.stream
                        headers = json.dumps(dict(msg.headers or {}), ensure_ascii=False)
                        self.scan(
                            f"stream {stream} seq {seq}",
                            f"{msg.subject}\n{headers}\n".encode() + (msg.data or b""),
                            test,
                        )
                    self.messages += len(batch)
                    remaining -= len(batch)
            finally:
                await sub.unsubscribe()
        self.seconds += time.perf_counter() - started

    # -- log files and in-process logging -----------------------------------------------

    def scan_log_files(self, root: Path, test: str | None = None) -> None:
        """Every ``*.log`` / ``*.out`` file below ``root`` (once per file and size)."""
        import time

        started = time.perf_counter()
        for path in sorted(p for p in root.rglob("*") if p.suffix in (".log", ".out")):
            try:
                data = path.read_bytes()
            except OSError as exc:
                self.errors.append(f"{path}: {exc}")
                continue
            key = f"{path.resolve()}:{len(data)}"
            if key in self._scanned_files or not path.is_file():
                continue
            self._scanned_files.add(key)
            self.log_files += 1
            self.log_bytes += len(data)
            self.scan(f"log {path}", data, test)
        self.seconds += time.perf_counter() - started


class ScanningLogHandler(logging.Handler):
    """Scans every record as the services would write it (their JSON lines, extras included)."""

    def __init__(self, registry: AtRestScan) -> None:
        super().__init__(logging.DEBUG)
        from pythonjsonlogger.json import JsonFormatter

        self.registry = registry
        self.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        import time

        started = time.perf_counter()
        try:
            line = self.format(record)
        except Exception:  # a record we cannot format is scanned as it came
            line = f"{record.name} {record.msg!r} {record.args!r}"
        self.registry.log_records += 1
        self.registry.scan(f"log record {record.name}", line)
        self.registry.seconds += time.perf_counter() - started
