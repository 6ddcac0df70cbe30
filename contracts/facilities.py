"""The 34 facilities that take cashless payment (キャッシュレス決済導入施設), as reference data.

Each facility has a code (a lower-case slug, ``contracts.payments.FACILITY_CODE_PATTERN``), its
Japanese name, its kind and what is paid there. Payments loads them into its own schema at
start-up; other services refer to a facility by its code only (市民課 is ``shiminka``, where
certificate fees are paid).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from contracts.payments import FACILITY_CODE_PATTERN


class FacilityKind(StrEnum):
    """The kinds of facility in the city's list."""

    ART = "art"
    """美術館"""
    SPORTS = "sports"
    """体育施設"""
    CITY_HALL = "city_hall"
    """本庁舎の課"""
    ADMINISTRATIVE_CENTER = "administrative_center"
    """行政センター"""
    LIAISON_OFFICE = "liaison_office"
    """連絡所"""
    SERVICE_CENTER = "service_center"
    """市民サービスセンター"""
    COMMUNITY_HALL = "community_hall"
    """公民館"""
    CITY_FACILITY = "city_facility"
    """駐車場・駐輪場"""


class PaidFor(StrEnum):
    """What is paid at a facility."""

    ADMISSION = "admission"
    """観覧料"""
    FACILITY_USE = "facility_use"
    """施設使用料"""
    CERTIFICATE_FEES = "certificate_fees"
    """証明書等発行手数料"""
    PARKING_PASSES = "parking_passes"
    """定期券等"""


@dataclass(frozen=True)
class Facility:
    """A facility (施設) that takes payments."""

    code: str
    name_ja: str
    kind: FacilityKind
    paid_for: PaidFor


_K, _P = FacilityKind, PaidFor

FACILITIES: tuple[Facility, ...] = (
    Facility("bijutsukan", "郡山市立美術館", _K.ART, _P.ADMISSION),
    Facility("sogo-taiikukan", "郡山総合体育館", _K.SPORTS, _P.FACILITY_USE),
    Facility("kaiseizan-rikujo", "開成山陸上競技場", _K.SPORTS, _P.FACILITY_USE),
    Facility("teikyujo", "郡山庭球場", _K.SPORTS, _P.FACILITY_USE),
    Facility("tobu-taiikukan", "東部体育館", _K.SPORTS, _P.FACILITY_USE),
    Facility("furusato-sports-park", "ふるさとの森スポーツパーク", _K.SPORTS, _P.FACILITY_USE),
    Facility("atami-football-center", "郡山市熱海フットボールセンター", _K.SPORTS, _P.FACILITY_USE),
    Facility("shiminka", "市民課", _K.CITY_HALL, _P.CERTIFICATE_FEES),
    Facility("shisanzeika", "資産税課", _K.CITY_HALL, _P.CERTIFICATE_FEES),
    Facility("tomita-gc", "富田行政センター", _K.ADMINISTRATIVE_CENTER, _P.CERTIFICATE_FEES),
    Facility("otsuki-gc", "大槻行政センター", _K.ADMINISTRATIVE_CENTER, _P.CERTIFICATE_FEES),
    Facility("asaka-gc", "安積行政センター", _K.ADMINISTRATIVE_CENTER, _P.CERTIFICATE_FEES),
    Facility("mihota-gc", "三穂田行政センター", _K.ADMINISTRATIVE_CENTER, _P.CERTIFICATE_FEES),
    Facility("ose-gc", "逢瀬行政センター", _K.ADMINISTRATIVE_CENTER, _P.CERTIFICATE_FEES),
    Facility("katahira-gc", "片平行政センター", _K.ADMINISTRATIVE_CENTER, _P.CERTIFICATE_FEES),
    Facility("kikuta-gc", "喜久田行政センター", _K.ADMINISTRATIVE_CENTER, _P.CERTIFICATE_FEES),
    Facility("hiwada-gc", "日和田行政センター", _K.ADMINISTRATIVE_CENTER, _P.CERTIFICATE_FEES),
    Facility("fukuyama-gc", "富久山行政センター", _K.ADMINISTRATIVE_CENTER, _P.CERTIFICATE_FEES),
    Facility("konan-gc", "湖南行政センター", _K.ADMINISTRATIVE_CENTER, _P.CERTIFICATE_FEES),
    Facility("atami-gc", "熱海行政センター", _K.ADMINISTRATIVE_CENTER, _P.CERTIFICATE_FEES),
    Facility("tamura-gc", "田村行政センター", _K.ADMINISTRATIVE_CENTER, _P.CERTIFICATE_FEES),
    Facility("nishita-gc", "西田行政センター", _K.ADMINISTRATIVE_CENTER, _P.CERTIFICATE_FEES),
    Facility("nakata-gc", "中田行政センター", _K.ADMINISTRATIVE_CENTER, _P.CERTIFICATE_FEES),
    Facility("kouchi-lo", "河内連絡所", _K.LIAISON_OFFICE, _P.CERTIFICATE_FEES),
    Facility("tsukigata-lo", "月形連絡所", _K.LIAISON_OFFICE, _P.CERTIFICATE_FEES),
    Facility("takase-lo", "高瀬連絡所", _K.LIAISON_OFFICE, _P.CERTIFICATE_FEES),
    Facility("futatsuse-lo", "二瀬連絡所", _K.LIAISON_OFFICE, _P.CERTIFICATE_FEES),
    Facility("koriyama-sc", "郡山市民サービスセンター", _K.SERVICE_CENTER, _P.CERTIFICATE_FEES),
    Facility(
        "midorigaoka-sc", "緑ケ丘市民サービスセンター", _K.SERVICE_CENTER, _P.CERTIFICATE_FEES
    ),
    Facility("chuo-kominkan", "中央公民館", _K.COMMUNITY_HALL, _P.FACILITY_USE),
    Facility(
        "nishiguchi-bicycle-1",
        "郡山駅西口第一自転車等駐車場",
        _K.CITY_FACILITY,
        _P.PARKING_PASSES,
    ),
    Facility(
        "nishiguchi-bicycle-2",
        "郡山駅西口第二自転車等駐車場",
        _K.CITY_FACILITY,
        _P.PARKING_PASSES,
    ),
    Facility(
        "higashiguchi-bicycle", "郡山駅東口自転車等駐車場", _K.CITY_FACILITY, _P.PARKING_PASSES
    ),
    Facility("nishiguchi-parking", "郡山駅西口駐車場", _K.CITY_FACILITY, _P.PARKING_PASSES),
)

FACILITIES_BY_CODE: dict[str, Facility] = {f.code: f for f in FACILITIES}

if len(FACILITIES_BY_CODE) != len(FACILITIES) or not all(
    re.match(FACILITY_CODE_PATTERN, f.code) for f in FACILITIES
):
    raise RuntimeError("facility codes must be unique slugs matching FACILITY_CODE_PATTERN")
