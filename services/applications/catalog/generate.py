"""Generate the shipped SAMPLE catalog: made-up procedures across Koriyama's departments.

These are not the city's real procedures: every one has ``sample: true``, a code starting
with ``SAMPLE-`` and a name ending in （サンプル）. They exist so that the catalog, its search
and the coverage KPIs can be exercised at the city's scale (about 4,300 procedures with the
hand-written core of migration 0002). The output is deterministic (fixed seed)::

    python -m services.applications.catalog.generate  # rewrites sample_catalog.json
"""

from __future__ import annotations

import json
import random
from datetime import date, timedelta
from pathlib import Path
from typing import Any

TOTAL_WITH_CORE = 4300
CORE_SIZE = 11  # the hand-written procedures of migration 0002
SEED = 72036  # Koriyama's local-government code

# 部局 and a few subjects each (what their procedures are about).
DEPARTMENTS: dict[str, tuple[str, list[str]]] = {
    "総務部": (
        "SOMU",
        ["情報公開", "個人情報開示", "行政財産使用", "職員採用試験", "防災行政無線"],
    ),
    "政策開発部": ("SEISAKU", ["市政モニター", "地域づくり活動", "広報掲載", "統計資料提供"]),
    "財務部": ("ZAIMU", ["入札参加資格", "契約", "市有地売払", "物品納入"]),
    "税務部": ("ZEIMU", ["市県民税", "固定資産税", "軽自動車税", "法人市民税", "入湯税"]),
    "市民部": ("SHIMIN", ["住民異動", "印鑑登録", "国民年金", "自治会", "消費生活相談"]),
    "文化スポーツ部": ("BUNKA", ["文化施設利用", "体育施設利用", "文化財", "スポーツ大会"]),
    "生活環境部": ("SEIKATSU", ["一般廃棄物", "浄化槽", "犬の登録", "墓地", "騒音規制"]),
    "保健福祉部": ("HOKEN", ["介護保険", "障害福祉サービス", "生活保護", "予防接種", "健康診査"]),
    "こども部": (
        "KODOMO",
        ["児童手当", "保育所入所", "放課後児童クラブ", "子ども医療費", "母子手帳"],
    ),
    "農林部": ("NORIN", ["農地転用", "農業委員会", "森林伐採", "鳥獣被害", "農業補助"]),
    "産業観光部": ("SANGYO", ["中小企業融資", "創業支援", "観光イベント", "企業立地"]),
    "建設交通部": ("KENSETSU", ["道路占用", "河川占用", "屋外広告物", "市営住宅", "公園使用"]),
    "都市構想部": ("TOSHI", ["開発行為", "建築確認", "景観", "土地区画整理"]),
    "上下水道局": ("SUIDO", ["給水装置工事", "水道使用", "下水道排水設備", "水道料金"]),
    "教育委員会": ("KYOIKU", ["就学援助", "学校施設開放", "奨学金", "図書館利用", "転校"]),
    "選挙管理委員会": ("SENKYO", ["不在者投票", "選挙人名簿", "政治団体"]),
}

# (action, group, fee, yields a certificate, form)
ACTIONS: list[tuple[str, int, int, bool, str]] = [
    ("申請", 2, 0, False, "application"),
    ("届出", 2, 0, False, "notification"),
    ("変更届", 2, 0, False, "notification"),
    ("廃止届", 2, 0, False, "notification"),
    ("許可申請", 2, 0, False, "application"),
    ("補助金交付申請", 2, 0, False, "grant"),
    ("実績報告", 1, 0, False, "report"),
    ("証明書の交付申請", 2, 300, True, "certificate"),
    ("講座・催しの申込", 1, 0, False, "event"),
    ("相談予約", 1, 0, False, "event"),
    ("資料の請求", 1, 0, False, "request"),
    ("アンケート回答", 1, 0, False, "report"),
    ("登録申請", 2, 0, False, "application"),
]

_TEXT = {"type": "string", "minLength": 1, "maxLength": 200}
FORMS: dict[str, dict[str, Any]] = {
    "application": {
        "type": "object",
        "additionalProperties": False,
        "required": ["details"],
        "properties": {
            "details": _TEXT | {"title": "申請内容"},
            "attachments": {"type": "integer"},
        },
    },
    "notification": {
        "type": "object",
        "additionalProperties": False,
        "required": ["effective_date"],
        "properties": {
            "effective_date": {"type": "string", "format": "date", "title": "届出日"},
            "details": _TEXT | {"title": "内容"},
        },
    },
    "grant": {
        "type": "object",
        "additionalProperties": False,
        "required": ["amount_yen", "purpose"],
        "properties": {
            "amount_yen": {"type": "integer", "minimum": 1, "title": "申請額（円）"},
            "purpose": _TEXT | {"title": "事業目的"},
        },
    },
    "report": {
        "type": "object",
        "additionalProperties": False,
        "required": ["body"],
        "properties": {"body": {"type": "string", "minLength": 1, "maxLength": 4000}},
    },
    "certificate": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "copies": {"type": "integer", "minimum": 1, "maximum": 10, "title": "通数"},
            "purpose": {"type": "string", "maxLength": 200, "title": "使用目的"},
        },
    },
    "event": {
        "type": "object",
        "additionalProperties": False,
        "required": ["preferred_date"],
        "properties": {
            "preferred_date": {"type": "string", "format": "date", "title": "希望日"},
            "participants": {"type": "integer", "minimum": 1, "maximum": 50},
        },
    },
    "request": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"delivery": {"enum": ["郵送", "メール", "窓口"]}},
    },
}

QUALIFIERS = ["", "（個人）", "（法人）", "（事業者）", "（団体）", "（再交付）", "（継続）"]


def _quarter(d: date) -> str:
    """The fiscal quarter (April-March) of a date, e.g. 2027-04-01 -> 2027-Q1."""
    fy = d.year if d.month >= 4 else d.year - 1
    return f"{fy}-Q{(d.month - 4) % 12 // 3 + 1}"


def generate(count: int = TOTAL_WITH_CORE - CORE_SIZE) -> list[dict[str, Any]]:
    rng = random.Random(SEED)
    rows: list[dict[str, Any]] = []
    names: set[str] = set()
    departments = list(DEPARTMENTS.items())
    counters: dict[str, int] = {}
    while len(rows) < count:
        department, (abbr, subjects) = rng.choice(departments)
        action, group, fee, certificate, form = rng.choice(ACTIONS)
        name = f"{rng.choice(subjects)}{rng.choice(QUALIFIERS)}の{action}（サンプル）"
        if name in names:
            name = f"{name[: -len('（サンプル）')]}（様式{len(rows) % 97 + 1}）（サンプル）"
            if name in names:
                continue
        names.add(name)
        counters[abbr] = counters.get(abbr, 0) + 1
        online_since: date | None = None
        planned: str | None = None
        if group == 1 or rng.random() < 0.55:
            start = date(2020, 10, 1) if group == 1 else date(2021, 4, 1)
            online_since = start + timedelta(days=rng.randrange(0, 5 * 365))
            if online_since > date(2026, 11, 1):
                planned = _quarter(online_since)
                online_since = None
        elif rng.random() < 0.8:
            planned = _quarter(date(2026, 12, 1) + timedelta(days=rng.randrange(0, 3 * 365)))
        rows.append(
            {
                "code": f"SAMPLE-{abbr}-{counters[abbr]:04d}",
                "name_ja": name,
                "department": department,
                "group": group,
                "fee_yen": fee if not certificate else rng.choice([200, 300, 300, 400]),
                "yields_certificate": certificate,
                "form_schema": FORMS[form],
                "online_since": online_since.isoformat() if online_since else None,
                "planned_online_quarter": planned,
                "sample": True,
            }
        )
    return rows


def dumps(rows: list[dict[str, Any]]) -> str:
    """One procedure per line: readable diffs, one JSON document."""
    lines = [json.dumps(r, ensure_ascii=False, sort_keys=True) for r in rows]
    return "[\n" + ",\n".join(lines) + "\n]\n"


def main() -> None:
    target = Path(__file__).parent / "sample_catalog.json"
    target.write_text(dumps(generate()), encoding="utf-8")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
