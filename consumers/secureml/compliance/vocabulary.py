"""The kinds of personal data the auditor knows, and how column names reveal them.

A column name is split into lower-case word tokens (``patientEmail_2`` -> ``patient``,
``email``, ``2``); a keyword matches when its tokens appear consecutively, or joined
into one token (``zip code`` matches ``zipcode``). Keywords starting with ``=`` match
only the whole name. The longest matching keyword wins, so ``email_address`` is an
e-mail address, not a postal address.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from .report import Severity

Group: TypeAlias = Literal[
    "direct_identifier", "person_name", "special_category", "quasi_identifier", "date"
]

#: Groups whose presence makes a dataset personal data.
PERSONAL_GROUPS: frozenset[Group] = frozenset(
    {"direct_identifier", "person_name", "special_category", "quasi_identifier"}
)


@dataclass(frozen=True)
class Kind:
    """A kind of personal data, with the HIPAA Safe Harbor identifier letter it falls under.

    ``severity`` is how grave an unprotected column of this kind is; ``special_under``
    names the regulations that treat the kind as a special category (GDPR Art. 9/10,
    CCPA sensitive personal information); ``articles`` overrides the citing check's
    provision per regulation.
    """

    id: str
    label: str
    group: Group
    keywords: tuple[str, ...] = ()
    safe_harbor: str | None = None
    severity: Severity = "high"
    special_under: frozenset[str] = frozenset()
    articles: Mapping[str, str] = field(default_factory=dict)

    @property
    def safe_harbor_citation(self) -> str | None:
        """Return the 45 CFR §164.514(b)(2)(i) citation of this kind's identifier letter."""
        return f"45 CFR §164.514(b)(2)(i)({self.safe_harbor})" if self.safe_harbor else None


_GDPR_CCPA = frozenset({"GDPR", "CCPA"})

KINDS: tuple[Kind, ...] = (
    Kind("email", "e-mail addresses", "direct_identifier",
         ("email", "e mail", "email address", "mail address"), "F"),
    Kind("phone", "telephone numbers", "direct_identifier",
         ("phone", "telephone", "tel", "=mobile", "mobile number", "mobile phone", "cell phone",
          "phone number", "msisdn"), "D"),
    Kind("fax", "fax numbers", "direct_identifier", ("fax", "fax number"), "E"),
    Kind("national_id", "national identification numbers (e.g. US SSN)", "direct_identifier",
         ("ssn", "social security", "national id", "national identifier",
          "national insurance", "nino", "nin", "tax id", "taxpayer id", "tin",
          "identity card", "id card", "personal number", "citizen id"), "G"),
    Kind("licence_number", "licence, certificate or passport numbers", "direct_identifier",
         ("passport", "passport number", "driver license", "drivers license", "driving licence",
          "license number", "licence number", "certificate number"), "K"),
    Kind("payment_card", "payment card numbers", "direct_identifier",
         ("credit card", "debit card", "card number", "cc number", "card no"), "J"),
    Kind("bank_account", "bank account numbers (e.g. IBAN)", "direct_identifier",
         ("iban", "bank account", "account number", "routing number", "sort code"), "J"),
    Kind("ip_address", "IP addresses", "direct_identifier",
         ("ip", "ip address", "ipv4", "ipv6", "client ip", "remote addr"), "O"),
    Kind("url", "web addresses (URLs)", "direct_identifier",
         ("url", "website", "homepage", "profile url", "web address"), "N"),
    Kind("device_id", "device identifiers", "direct_identifier",
         ("device id", "mac address", "imei", "advertising id", "idfa", "gaid", "udid",
          "serial number", "cookie id"), "M"),
    Kind("vehicle_id", "vehicle identifiers", "direct_identifier",
         ("license plate", "licence plate", "number plate", "vin", "vehicle id"), "L"),
    Kind("medical_record", "medical record numbers", "direct_identifier",
         ("mrn", "medical record", "medical record number", "patient id", "patient number",
          "chart number", "nhs number"), "H"),
    Kind("health_plan", "health plan beneficiary numbers", "direct_identifier",
         ("health plan", "beneficiary id", "insurance id", "insurance number", "policy number",
          "member id", "medicare id", "medicaid id"), "I"),
    Kind("postal_address", "postal addresses", "direct_identifier",
         ("address", "street", "street address", "home address", "address line",
          "postal address"), "B"),
    Kind("geolocation", "precise geolocation", "direct_identifier",
         ("latitude", "longitude", "lat", "lon", "lng", "geolocation", "geo location", "gps",
          "coordinates", "geohash"), "B"),
    Kind("photo", "full-face photographs", "direct_identifier",
         ("photo", "photograph", "face image", "portrait", "selfie", "headshot",
          "profile picture"), "Q"),
    Kind("online_id", "online identifiers (user names, logins)", "direct_identifier",
         ("username", "user name", "=login", "login name", "login id", "screen name",
          "account name"), "R"),
    Kind("record_id", "pseudonymous person identifiers (user, customer, employee ids)",
         "direct_identifier",
         ("user id", "customer id", "client id", "employee id", "person id", "subject id",
          "account id", "customer number", "employee number"), "R", severity="medium"),
    Kind("person_name", "names of people", "person_name",
         ("=name", "full name", "first name", "last name", "given name", "family name",
          "middle name", "maiden name", "surname", "forename", "patient name", "customer name",
          "client name", "employee name", "person name", "contact name", "member name",
          "cardholder name", "holder name"), "A"),
    Kind("health", "health data", "special_category",
         ("diagnosis", "diagnoses", "medical", "medical condition", "health condition",
          "chronic condition", "health status", "health record", "disease", "illness",
          "medication", "medications", "prescription", "symptom", "symptoms", "icd",
          "icd code", "allergy", "allergies", "disability", "pregnancy", "pregnant",
          "mental health", "hiv", "hiv status", "blood type", "blood pressure",
          "vaccination", "lab result"),
         special_under=_GDPR_CCPA),
    Kind("genetic", "genetic data", "special_category",
         ("genetic", "genome", "genomic", "dna", "gene", "genotype", "snp", "allele"),
         special_under=_GDPR_CCPA),
    Kind("biometric", "biometric data", "special_category",
         ("biometric", "fingerprint", "voiceprint", "voice print", "iris scan", "retina scan",
          "face embedding", "face template", "facial"),
         "P", special_under=_GDPR_CCPA),
    Kind("racial_ethnic_origin", "racial or ethnic origin", "special_category",
         ("race", "racial", "ethnicity", "ethnic", "ethnic origin", "ethnic group"),
         special_under=_GDPR_CCPA),
    Kind("political_opinion", "political opinions", "special_category",
         ("political", "political party", "party affiliation", "political affiliation",
          "political opinion", "voting intention"),
         special_under=frozenset({"GDPR"})),
    Kind("religious_belief", "religious or philosophical beliefs", "special_category",
         ("religion", "religious", "faith", "belief", "beliefs", "denomination",
          "philosophical belief"),
         special_under=_GDPR_CCPA),
    Kind("trade_union", "trade union membership", "special_category",
         ("trade union", "union member", "union membership", "labor union", "labour union"),
         special_under=_GDPR_CCPA),
    Kind("sexual_orientation", "sex life or sexual orientation", "special_category",
         ("sexual orientation", "sexuality", "sex life", "sexual preference"),
         special_under=_GDPR_CCPA),
    Kind("criminal_record", "criminal convictions and offences", "special_category",
         ("criminal", "criminal record", "conviction", "convictions", "offence", "offense",
          "arrest", "arrests"),
         special_under=frozenset({"GDPR"}), articles={"GDPR": "Art. 10"}),
    Kind("citizenship", "citizenship or immigration status", "special_category",
         ("citizenship", "immigration status", "visa status", "residency status"),
         special_under=frozenset({"CCPA"})),
    Kind("age", "ages", "quasi_identifier", ("age", "age years", "age group"), "C"),
    Kind("birth_date", "dates of birth", "quasi_identifier",
         ("dob", "date of birth", "birth date", "birthday", "born"), "C"),
    Kind("birth_year", "years of birth", "quasi_identifier",
         ("birth year", "year of birth", "yob"), "C"),
    Kind("postal_code", "postal codes", "quasi_identifier",
         ("zip", "zip code", "postcode", "post code", "postal code", "plz"), "B"),
    Kind("gender", "gender or sex", "quasi_identifier", ("gender", "sex")),
    Kind("locality", "cities, counties or districts", "quasi_identifier",
         ("city", "town", "village", "municipality", "county", "district", "neighbourhood",
          "neighborhood"), "B"),
    Kind("marital_status", "marital status", "quasi_identifier",
         ("marital", "marital status")),
    Kind("nationality", "nationality or place of birth", "quasi_identifier",
         ("nationality", "country of birth", "place of birth", "birthplace")),
    Kind("occupation", "occupations or employers", "quasi_identifier",
         ("occupation", "job title", "profession", "employer")),
    Kind("event_date", "dates of events in a person's life (admission, discharge, death...)",
         "date",
         ("admission date", "admit date", "discharge date", "date of death", "death date",
          "visit date", "appointment date", "procedure date", "service date",
          "encounter date", "diagnosis date"), "C"),
    Kind("calendar_date", "dates more specific than a year", "date", (), "C"),
)

KINDS_BY_ID: Mapping[str, Kind] = {kind.id: kind for kind in KINDS}


def tokenise(name: str) -> tuple[str, ...]:
    """Split a column name into lower-case word and number tokens."""
    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", name))
    return tuple(re.findall(r"[a-z]+|\d+", spaced.lower()))


def _match_length(keyword: str, tokens: tuple[str, ...]) -> int:
    """Return how many tokens ``keyword`` covers in ``tokens``, or 0 when it does not match."""
    whole_name_only = keyword.startswith("=")
    wanted = tokenise(keyword.lstrip("="))
    if whole_name_only:
        return len(wanted) if tokens == wanted else 0
    width = len(wanted)
    if any(tokens[i : i + width] == wanted for i in range(len(tokens) - width + 1)):
        return width
    return width if "".join(wanted) in tokens else 0


def classify_column(name: str) -> Kind | None:
    """Return the kind of personal data a column name reveals, or None."""
    tokens = tokenise(name)
    best: tuple[int, Kind | None] = (0, None)
    for kind in KINDS:
        length = max((_match_length(keyword, tokens) for keyword in kind.keywords), default=0)
        if length > best[0]:
            best = (length, kind)
    return best[1]
