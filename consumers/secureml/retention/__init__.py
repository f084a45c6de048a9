"""Retention with legal hold: expire events under a policy, sign what was removed, keep verify honest."""

from __future__ import annotations

from secureml.retention.apply import RetentionResult, apply_retention
from secureml.retention.holds import Hold, add_hold, list_holds, remove_hold, stored_subject
from secureml.retention.policy import DEFAULT_POLICY, RetentionPolicy, load_policy

__all__ = ["DEFAULT_POLICY", "Hold", "RetentionPolicy", "RetentionResult", "add_hold", "apply_retention",
           "list_holds", "load_policy", "remove_hold", "stored_subject"]
