"""Content detectors: RE2 patterns, SQL validators and masks for personal data in text.

Each detector's pattern has exactly one capture group, the candidate value. A sampled
value counts as a match when at least one candidate passes the detector's SQL validator
(``x`` names the candidate). A column is reported when the matches reach ``min_share``
of its non-null sampled values and, for validated detectors, when enough candidates pass
(``min_valid_ratio``) that a checksum passing by chance (1 in 10 for Luhn) is not enough.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from secureml.audit.privacy.detectors import EMAIL, IBAN, PAYMENT_CARD, PHONE, US_SSN

from .first_names import FIRST_NAMES


def mask_email(value: str) -> str:
    """Keep the first character of the local part and the domain: ``j***@example.com``."""
    local, _, domain = value.partition("@")
    return f"{local[:1]}***@{domain}"


def mask_name(value: str) -> str:
    """Keep the initial of each word: ``J*** S***``."""
    return " ".join(f"{word[:1]}***" for word in value.replace(",", " ").split())


def mask_characters(value: str) -> str:
    """Mask every letter and digit but the last two of a long value: ``***-**-**89``."""
    alphanumerics = sum(char.isalnum() for char in value)
    keep = 2 if alphanumerics >= 6 else 0
    masked: list[str] = []
    for char in reversed(value):
        if char.isalnum() and keep:
            keep -= 1
            masked.append(char)
        else:
            masked.append("*" if char.isalnum() else char)
    return "".join(reversed(masked))


@dataclass(frozen=True)
class Detector:
    """A content pattern for one kind of personal data; ``mask`` None reports no example."""

    id: str
    kind: str
    pattern: str
    valid: str | None = None
    min_share: float = 0.0
    min_valid_ratio: float = 0.0
    mask: Callable[[str], str] | None = mask_characters


#: SQL macros the validators use, created on the connection that scans the sample.
SQL_MACROS: tuple[str, ...] = (
    "CREATE OR REPLACE MACRO secureml_digits(s) AS regexp_replace(s, '[^0-9]', '', 'g')",
    # Luhn: double every second digit from the right, subtract 9 from results over 9.
    """CREATE OR REPLACE MACRO secureml_luhn(digits) AS
       list_sum(list_transform(list_reverse(string_split(digits, '')),
           lambda d, i: CASE WHEN i % 2 = 0
                        THEN CAST(d AS INTEGER) * 2 - CASE WHEN CAST(d AS INTEGER) > 4 THEN 9 ELSE 0 END
                        ELSE CAST(d AS INTEGER) END)) % 10 = 0""",
    # Issuer prefixes of Visa, Mastercard, Amex, Diners, JCB, Discover/UnionPay/Maestro.
    """CREATE OR REPLACE MACRO secureml_card(digits) AS
       length(digits) BETWEEN 13 AND 19
       AND regexp_matches(digits, '^(4|5[1-5]|2[2-7]|3[0478]|35|6)')
       AND secureml_luhn(digits)""",
    # ISO 13616: move the first four characters to the end, letters to 10..35, mod 97 = 1.
    """CREATE OR REPLACE MACRO secureml_iban(candidate) AS
       list_reduce(
           list_transform(
               string_split(array_to_string(list_transform(
                   string_split(substr(upper(replace(candidate, ' ', '')), 5)
                                || substr(upper(replace(candidate, ' ', '')), 1, 4), ''),
                   lambda ch: CASE WHEN ch BETWEEN '0' AND '9' THEN ch
                              ELSE CAST(ascii(ch) - 55 AS VARCHAR) END), ''), ''),
               lambda d: CAST(d AS INTEGER)),
           lambda acc, d: (acc * 10 + d) % 97, 0) = 1""",
)

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_NAMES = "|".join(FIRST_NAMES)


def _words(*words: str) -> str:
    """Return a case-insensitive pattern capturing any of ``words`` as a whole word."""
    return r"(?i)(?:^|[^a-z])(" + "|".join(words) + r")(?:$|[^a-z])"


DETECTORS: tuple[Detector, ...] = (
    # The patterns shared with the producer's redaction (secureml.audit.privacy.detectors).
    Detector("email", "email", EMAIL, mask=mask_email),
    Detector("us_ssn", "national_id", US_SSN),
    Detector("payment_card", "payment_card", PAYMENT_CARD, valid="secureml_card(secureml_digits(x))",
             min_valid_ratio=0.5),
    Detector("iban", "bank_account", IBAN, valid="secureml_iban(x)", min_valid_ratio=0.5),
    Detector("phone", "phone", PHONE),
    Detector("ipv4", "ip_address",
             rf"(?:^|[^\d.])((?:{_OCTET}\.){{3}}{_OCTET})(?:$|[^\d.]|\.(?:$|[^\d]))"),
    Detector("ipv6", "ip_address",
             r"(?i)(?:^|[^0-9a-f:])((?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4})(?:$|[^0-9a-f:])"),
    # A whole value of one to four capitalised words led by a common first name
    # ("Mary Smith", "Smith, Mary"); a share of the column must match, since some
    # first names are also surnames or places.
    Detector("person_name", "person_name",
             rf"^\s*((?:[A-Z][a-z'-]+,\s+)?(?:{_NAMES})(?:\s+[A-Z][A-Za-z'.-]*){{0,3}})\s*$",
             min_share=0.3, mask=mask_name),
    Detector("date", "calendar_date",
             r"(?:^|[^\d])((?:19|20)\d\d-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])"
             r"|\d{1,2}/\d{1,2}/(?:19|20)\d\d|\d{1,2}\.\d{1,2}\.(?:19|20)\d\d)(?:$|[^\d])"),
    Detector("health_terms", "health",
             _words("diabetes", "diabetic", "hypertension", "asthma", "cancer", "tumou?r",
                    "hiv", "hepatitis", "depression", "schizophrenia", "bipolar", "dementia",
                    "alzheimer'?s?", "pregnan(?:t|cy)", "chemotherapy", "insulin", "epilepsy",
                    "stroke", "copd", "anxiety disorder"),
             min_share=0.05, mask=None),
    Detector("religion_terms", "religious_belief",
             _words("christianity", "catholic", "protestant", "muslim", "islam", "jewish",
                    "judaism", "hindu", "buddhist", "sikh", "atheist", "agnostic"),
             min_share=0.05, mask=None),
    Detector("ethnicity_terms", "racial_ethnic_origin",
             _words("hispanic", "latino", "latina", "caucasian", "african american",
                    "asian american", "native american", "pacific islander"),
             min_share=0.05, mask=None),
    Detector("orientation_terms", "sexual_orientation",
             _words("heterosexual", "homosexual", "bisexual", "gay", "lesbian", "asexual",
                    "pansexual"),
             min_share=0.05, mask=None),
    Detector("political_terms", "political_opinion",
             _words("democrat", "republican", "labour party", "conservative party",
                    "green party", "socialist", "libertarian"),
             min_share=0.05, mask=None),
    Detector("union_terms", "trade_union",
             _words("trade union", "union member", "unionised", "unionized"),
             min_share=0.05, mask=None),
    Detector("criminal_terms", "criminal_record",
             _words("convicted", "conviction", "felony", "misdemeanou?r", "arrested"),
             min_share=0.05, mask=None),
)
