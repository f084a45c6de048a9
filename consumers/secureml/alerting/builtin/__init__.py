"""The built-in rules, each with its legal basis and defaults that a rules file can change."""

from __future__ import annotations

from secureml.alerting.builtin.access import (
    AccessOutsideHours,
    AccessWithoutPurpose,
    AccessWithoutUser,
    SensitiveColumnAccess,
)
from secureml.alerting.builtin.checks import FailedComplianceCheck
from secureml.alerting.builtin.deadlines import OperationNotClosed, RequestDeadlineMissed
from secureml.alerting.builtin.lineage import PrivacyBudgetExceeded, TrainingOnUnprotectedData
from secureml.alerting.builtin.volume import BulkAccess
from secureml.alerting.rule import Rule

BUILTIN_RULES: dict[str, type[Rule]] = {
    rule.id: rule
    for rule in (
        FailedComplianceCheck, AccessWithoutPurpose, AccessWithoutUser, BulkAccess, SensitiveColumnAccess,
        AccessOutsideHours, TrainingOnUnprotectedData, PrivacyBudgetExceeded, RequestDeadlineMissed,
        OperationNotClosed,
    )
}

__all__ = ["BUILTIN_RULES"]
