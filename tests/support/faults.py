"""The fault campaign's table: one row per case, printed at the end of the test run."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    """What one fault did to the events: acknowledged by flush()/close(), stored, lost, duplicated, detected."""

    case: str
    acknowledged: int
    stored: int
    lost: int  # acknowledged, yet not in the lake
    duplicated: int  # rows beyond the first of an event
    detected: str  # what named the damage (verify findings, dead letters), or "-" when there was none

    @property
    def line(self) -> str:
        return (f"{self.case:<44} {self.acknowledged:>12,} {self.stored:>9,} {self.lost:>6,} {self.duplicated:>11,}  "
                f"{self.detected}")


OUTCOMES: list[Outcome] = []
HEADER = f"{'case':<44} {'acknowledged':>12} {'stored':>9} {'lost':>6} {'duplicated':>11}  detected"


def table() -> list[str]:
    """The campaign's table, as lines (empty when no case ran)."""
    if not OUTCOMES:
        return []
    return ["fault campaign (tests/test_fault_campaign.py)", HEADER, *(o.line for o in OUTCOMES)]
