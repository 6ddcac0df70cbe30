"""Certificates (証明書): the PDF document, its number and its verification code. No I/O.

The PDF is made with fpdf2 and embeds (as a subset) IPAex Gothic, the Japanese font shipped in
the ``matplotlib-fontja`` wheel (IPA Font License). Why these: fpdf2 is a pure-Python,
well-kept PDF writer that subsets TrueType fonts with fontTools; IPAex is a TrueType font
(Noto Sans CJK on PyPI is CFF OpenType and three times larger), and ``matplotlib-fontja`` is the
widely used wheel that ships it. The font file is located without importing the package (which
would import matplotlib).

The verification code is random (10 characters of an unambiguous alphabet, about 50 bits); only
its SHA-256 is kept next to the PDF, and the public check compares in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
import secrets
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

TOKYO = ZoneInfo("Asia/Tokyo")
_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I


@cache
def japanese_font() -> Path:
    spec = importlib.util.find_spec("matplotlib_fontja")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("matplotlib-fontja (IPAex Gothic) is not installed")
    font = Path(next(iter(spec.submodule_search_locations))) / "fonts" / "ipaexg.ttf"
    if not font.is_file():
        raise RuntimeError(f"IPAex Gothic not found at {font}")
    return font


def new_verification_code() -> str:
    raw = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(10))
    return f"{raw[:5]}-{raw[5:]}"


def code_hash(code: str) -> str:
    return hashlib.sha256(code.strip().upper().encode()).hexdigest()


def code_matches(code: str, stored_hash: str) -> bool:
    return hmac.compare_digest(code_hash(code), stored_hash)


def wareki(when: datetime) -> str:
    """The date in the Japanese era (和暦), for paper: 令和8年11月24日."""
    local = when.astimezone(TOKYO)
    if local.date() >= datetime(2019, 5, 1).date():
        year = local.year - 2018
        era = "令和"
    else:
        year = local.year - 1988
        era = "平成"
    return f"{era}{'元' if year == 1 else year}年{local.month}月{local.day}日"


@dataclass(frozen=True)
class CertificateContent:
    """What the document says."""

    number: str
    verification_code: str
    procedure_name: str
    issued_at: datetime
    holder_name: str | None
    holder_address: str | None
    details: dict[str, str]


def render_pdf(c: CertificateContent) -> bytes:
    """The certificate as a one-page A4 PDF."""
    from fpdf import FPDF  # imported when first needed: it takes a second to load

    pdf = FPDF(format="A4")
    pdf.set_title(f"{c.procedure_name} {c.number}")
    pdf.set_creator("cityhall (郡山市デジタル市役所)")
    pdf.add_page()
    pdf.add_font("ipaexg", fname=str(japanese_font()))
    pdf.set_font("ipaexg", size=20)
    pdf.cell(0, 16, c.procedure_name, align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("ipaexg", size=11)
    pdf.cell(0, 8, f"証明書番号 {c.number}", align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    rows: list[tuple[str, str]] = []
    if c.holder_name:
        rows.append(("氏名", c.holder_name))
    if c.holder_address:
        rows.append(("住所", c.holder_address))
    rows += list(c.details.items())
    for label, value in rows:
        pdf.cell(40, 9, label, border=1)
        pdf.multi_cell(0, 9, value, border=1, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(8)
    pdf.multi_cell(0, 7, "上記のとおり証明します。", new_x="LMARGIN", new_y="NEXT")
    pdf.cell(0, 8, wareki(c.issued_at), new_x="LMARGIN", new_y="NEXT")
    pdf.cell(0, 8, "郡山市長", align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(10)
    pdf.set_font("ipaexg", size=9)
    pdf.multi_cell(
        0,
        6,
        f"検証コード {c.verification_code}\n"
        "この証明書が本物であることは、証明書番号と検証コードで確認できます"
        "（POST /certificates/verify）。確認で個人情報は表示されません。",
        new_x="LMARGIN",
        new_y="NEXT",
    )
    return bytes(pdf.output())
