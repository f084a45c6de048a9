"""Deadlines kept in a rule's JSON state: schedule, cancel, and collect the expired ones cheaply."""

from __future__ import annotations

from typing import Any


def schedule(state: dict[str, Any], key: str, entry: dict[str, Any]) -> None:
    """Remember ``entry`` (which has a ``due`` time in UTC micros) under ``key``."""
    state.setdefault("timers", {})[key] = entry
    next_due = state.get("next_due")
    state["next_due"] = entry["due"] if next_due is None else min(next_due, entry["due"])


def cancel(state: dict[str, Any], key: str) -> None:
    """Forget the timer under ``key``, if there is one (``next_due`` may stay early: expired() rechecks)."""
    state.get("timers", {}).pop(key, None)


def pending(state: dict[str, Any], key: str) -> dict[str, Any] | None:
    """The timer under ``key``, if scheduled."""
    entry: dict[str, Any] | None = state.get("timers", {}).get(key)
    return entry


def expired(state: dict[str, Any], now: int) -> list[tuple[str, dict[str, Any]]]:
    """Remove and return the timers due at ``now``, earliest first (nothing to scan before the next due time)."""
    next_due = state.get("next_due")
    if next_due is None or now < next_due:
        return []
    timers: dict[str, dict[str, Any]] = state.get("timers", {})
    due = sorted(((k, e) for k, e in timers.items() if e["due"] <= now), key=lambda item: (item[1]["due"], item[0]))
    for key, _ in due:
        del timers[key]
    state["next_due"] = min((e["due"] for e in timers.values()), default=None)
    return due
