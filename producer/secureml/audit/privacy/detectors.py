"""Personal data in free text: the patterns and checksums of e-mail, phone, card, SSN and IBAN.

The one copy of these patterns: the producer redacts with them before an event is sealed, and
the compliance profiler (``secureml.compliance.detectors``) scans datasets with the same
patterns (as RE2 in DuckDB, validated there by SQL macros). Each pattern has exactly one
capture group, the candidate value; the characters around it only anchor it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

EMAIL = r"([A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})"
# US SSA never issues area 000, 666 or 9xx, group 00 or serial 0000.
US_SSN = (r"(?:^|[^\d-])((?:00[1-9]|0[1-9]\d|[1-578]\d\d|6[0-57-9]\d|66[0-57-9])"
          r"-(?:0[1-9]|[1-9]\d)-(?:000[1-9]|00[1-9]\d|0[1-9]\d\d|[1-9]\d{3}))(?:$|[^\d-])")
PAYMENT_CARD = r"(?:^|[^\d])(\d(?:[ -]?\d){12,18})(?:$|[^\d])"
IBAN = r"(?:^|[^A-Za-z0-9])([A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?)(?:$|[^A-Za-z0-9])"
# A separator or a leading + is required, so plain integers and card numbers do not count;
# the groups allow 8 to 15 digits, as E.164 does.
PHONE = (r"(?:^|[^\d.\s-]\s?)((?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)|\d{2,4})[\s.-]\d{3,4}[\s.-]?\d{3,4})"
         r"(?:$|[\s-]?[^\d\s.-]|[\s-]$|\.(?:$|\s))")

_CARD_ISSUERS = re.compile(r"^(4|5[1-5]|2[2-7]|3[0478]|35|6)")


def luhn(digits: str) -> bool:
    """The Luhn checksum of a digit string holds."""
    total = 0
    for i, char in enumerate(reversed(digits)):
        d = ord(char) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def valid_card(candidate: str) -> bool:
    """13-19 digits, a known issuer prefix and a valid Luhn checksum."""
    digits = re.sub(r"\D", "", candidate)
    return 13 <= len(digits) <= 19 and _CARD_ISSUERS.match(digits) is not None and luhn(digits)


def valid_iban(candidate: str) -> bool:
    """ISO 13616: the first four characters moved to the end, letters as 10..35, mod 97 is 1."""
    compact = candidate.replace(" ", "").upper()
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


# (kind, compiled pattern, validator): the kind is the marker the value is replaced by.
TEXT_DETECTORS: tuple[tuple[str, re.Pattern[str], Callable[[str], bool] | None], ...] = (
    ("email", re.compile(EMAIL), None),
    ("ssn", re.compile(US_SSN), None),
    ("iban", re.compile(IBAN), valid_iban),
    ("card", re.compile(PAYMENT_CARD), valid_card),
    ("phone", re.compile(PHONE), None),
)
# Every detector needs an '@' or a digit: text without either is returned at once.
CANDIDATE = re.compile(r"[@\d]")


def redact(text: str) -> str:
    """``text`` with every detected e-mail, SSN, IBAN, card and phone number replaced by ``<kind>``."""
    if CANDIDATE.search(text) is None:
        return text
    for kind, pattern, valid in TEXT_DETECTORS:
        text = _replace(text, kind, pattern, valid)
    return text


def _replace(text: str, kind: str, pattern: re.Pattern[str], valid: Callable[[str], bool] | None) -> str:
    parts: list[str] = []
    last = 0
    position = 0
    while (found := pattern.search(text, position)) is not None:
        start, end = found.span(1)
        # The anchors around the candidate may be consumed; search again from the candidate's end.
        position = max(end, found.start() + 1)
        if valid is not None and not valid(found.group(1)):
            continue
        parts.append(text[last:start])
        parts.append(f"<{kind}>")
        last = end
    if not parts:
        return text
    parts.append(text[last:])
    return "".join(parts)


def redact_bytes(value: bytes) -> bytes:
    """Raw bytes (a dead letter's copy) with detected personal data replaced, every other byte kept."""
    return redact(value.decode("latin-1")).encode("latin-1")
