"""Rules files: defaults, overrides, custom rules by module:Class, and errors that name the line and field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from support.alerting import make_alerter, published

from conftest import Harness
from secureml.alerting import BUILTIN_RULES, Alerter, RuleConfigError, load_rules
from secureml.alerting.builtin.access import SensitiveColumnAccess
from secureml.alerting.builtin.volume import BulkAccess
from secureml.alerting.config import configured_rules
from secureml.audit import AuditError, AuditTrail

NEEDS_FACTS = {"bulk_access": ["threshold"], "sensitive_column_access": ["column_roles or allowed_roles"],
               "access_outside_hours": ["timezone", "start", "end"]}


def test_no_file_means_every_builtin_rule_that_needs_no_facts() -> None:
    """Without a rules file the built-ins run with their defaults, except those that need an organisation's facts."""
    rules = load_rules()
    assert [r.rule_id for r in rules] == [r for r in BUILTIN_RULES if r not in NEEDS_FACTS]
    off = {r.rule_id: r.options.missing() for r in configured_rules() if not r.active}
    assert off == NEEDS_FACTS
    lineage = next(r for r in rules if r.rule_id == "training_on_unprotected_data")
    assert (lineage.options.idle_timeout, lineage.severity) == (1.0, "high")


def test_giving_the_facts_turns_a_rule_on() -> None:
    """A rule that needs facts runs once the file gives them, and only then."""
    rules = {r.rule_id: r for r in load_rules(text=textwrap.dedent("""
        rules:
          bulk_access: {threshold: 5000}
          sensitive_column_access: {column_roles: {ssn: [fraud_team]}}
          access_outside_hours: {timezone: Europe/Berlin, start: "08:00", end: "18:00"}
    """))}
    assert set(NEEDS_FACTS) <= set(rules)
    assert rules["bulk_access"].options.window == 3600.0
    assert rules["access_outside_hours"].options.days == ["mon", "tue", "wed", "thu", "fri"]


def test_a_rule_missing_facts_is_refused_where_it_is_built(tmp_path: Path) -> None:
    """Given some facts but not all, or enabled without them: an AuditError naming the call, rule and field."""
    with pytest.raises(RuleConfigError) as caught:
        load_rules(text="rules:\n  access_outside_hours:\n    timezone: Europe/Berlin\n")
    assert isinstance(caught.value, AuditError)
    assert (caught.value.call, caught.value.rule, caught.value.field, caught.value.line) == (
        "load_rules(text=...)", "access_outside_hours", "rules.access_outside_hours.start", 2)
    assert "needs start, end" in str(caught.value) and "timezone: Europe/Berlin" in str(caught.value)
    with pytest.raises(RuleConfigError, match=r"rules\.bulk_access\.threshold: needs threshold"):
        load_rules(text="rules: {bulk_access: {enabled: true}}")
    with pytest.raises(RuleConfigError) as caught:
        BulkAccess(BulkAccess.Options(window=60))
    assert (caught.value.call, caught.value.rule, caught.value.field) == ("BulkAccess(...)", "bulk_access",
                                                                          "threshold")
    with pytest.raises(RuleConfigError) as caught:
        Alerter([SensitiveColumnAccess()], log_dir=tmp_path)
    assert str(caught.value).startswith(
        "Alerter(rules=...): rule 'sensitive_column_access': column_roles: needs column_roles or allowed_roles")
    with pytest.raises(RuleConfigError, match=r"^BulkAccess\(\.\.\.\): rule 'bulk_access': threshold: Input should be "
                                              r"greater than 0"):
        BulkAccess({"threshold": 0})
    assert BulkAccess({"threshold": 5000}).active


def test_file_changes_defaults_and_disables_rules(tmp_path: Path) -> None:
    """A rules file tunes options, overrides severity and legal basis, and switches rules off."""
    path = tmp_path / "rules.yaml"
    path.write_text(textwrap.dedent("""
        rules:
          bulk_access: {threshold: 500, window: 15m, mode: tumbling, severity: critical}
          access_outside_hours:
            enabled: false
          request_deadline_missed:
            deadlines:
              GDPR: {within: 1mo, article: "Art. 12(3)"}
              LGPD: {within: 15d, article: "Art. 19"}
          failed_compliance_check: {regulation: CCPA, article: "§ 1798.100"}
    """))
    rules = {r.rule_id: r for r in load_rules(path)}
    assert "access_outside_hours" not in rules
    bulk = rules["bulk_access"]
    assert (bulk.options.threshold, bulk.options.window, bulk.options.mode, bulk.severity) == (
        500, 900.0, "tumbling", "critical")
    assert str(rules["request_deadline_missed"].options.deadlines["LGPD"].within) == "15d"
    assert (rules["failed_compliance_check"].regulation, rules["failed_compliance_check"].article) == (
        "CCPA", "§ 1798.100")


BAD_FILES = [
    ("rules:\n  bulk_access:\n    threshold: -5\n", 3, "rules.bulk_access.threshold", "greater than 0"),
    ("rules:\n  bulk_access:\n    treshold: 5\n", 3, "rules.bulk_access.treshold", "Extra inputs are not permitted"),
    ("rules:\n  bulk_acess: {}\n", 2, "rules.bulk_acess", "unknown built-in rule 'bulk_acess'"),
    ("rules:\n  operation_not_closed:\n    timeout: soon\n", 3, "rules.operation_not_closed.timeout",
     "length of time such as 90s"),
    ("rules:\n  bulk_access:\n    window: 1mo\n", 3, "rules.bulk_access.window", "give days instead"),
    ("rules:\n  training_on_unprotected_data:\n    grace: 2s\n", 2, "rules.training_on_unprotected_data",
     "set idle_timeout"),
    ("rules:\n  training_on_unprotected_data:\n    idle_timeout: 0\n", 3,
     "rules.training_on_unprotected_data.idle_timeout", "positive length of time"),
    ("rules:\n  sensitive_column_access:\n    column_roles: {ssn: fraud_team}\n", 3,
     "rules.sensitive_column_access.column_roles.ssn", "valid list"),
    ("# hours\nrules:\n  access_outside_hours:\n    days: [mon, funday]\n", 4,
     "rules.access_outside_hours.days.1", "'mon', 'tue'"),
    ("rules:\n  access_outside_hours:\n    timezone: Mars/Olympus\n", 3, "rules.access_outside_hours.timezone",
     "unknown time zone"),
    ("rules:\n  access_without_user: {severity: urgent}\n", 2, "rules.access_without_user.severity", "'low'"),
    ("rules:\n  request_deadline_missed:\n    default_regulation: HIPAA\n", 2, "rules.request_deadline_missed",
     "default_regulation 'HIPAA'"),
    ("rules:\n  request_deadline_missed:\n    deadlines:\n      CCPA: {within: 45d}\n", 4,
     "rules.request_deadline_missed.deadlines.CCPA.article", "Field required"),
    ("rulez: {}\n", 1, "rulez", "Extra inputs are not permitted"),
    ("rules: [bulk_access]\n", 1, "rules", "valid dictionary"),
    ("custom:\n  - class: nowhere_at_all:Rule\n", 2, "custom.0.class", "cannot import 'nowhere_at_all'"),
    ("custom:\n  - class: json:JSONDecoder\n", 2, "custom.0.class", "not a Rule subclass"),
    ("custom:\n  - severity: low\n", 2, "custom.0.class", "module:Class"),
]


@pytest.mark.parametrize(("text", "line", "field", "problem"), BAD_FILES, ids=[f for _, _, f, _ in BAD_FILES])
def test_bad_rules_file_names_line_and_field(tmp_path: Path, text: str, line: int, field: str, problem: str) -> None:
    """An invalid rules file is refused with its path, the line and the dotted field of the problem."""
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    with pytest.raises(RuleConfigError) as caught:
        load_rules(path)
    assert (caught.value.line, caught.value.field) == (line, field), str(caught.value)
    assert problem in str(caught.value)
    assert str(caught.value).startswith(f"load_rules({str(path)!r}): {path}:{line}: {field}: ")


def test_yaml_syntax_error_names_the_line() -> None:
    """Broken YAML is refused with the line where the parser stopped."""
    with pytest.raises(RuleConfigError, match=r"^load_rules\(text=\.\.\.\): <rules>:3: not valid YAML") as caught:
        load_rules(text="rules:\n  bulk_access: {threshold: 5\n  other: 1\n")
    assert caught.value.line == 3


def test_missing_rules_file_says_so(tmp_path: Path) -> None:
    """A rules path that does not exist is refused with a hint to check --rules."""
    with pytest.raises(RuleConfigError, match="check the --rules path"):
        load_rules(tmp_path / "nope.yaml")


CUSTOM_RULE = '''
from __future__ import annotations

from pydantic import Field

from secureml.alerting import Alert, Event, Rule, RuleContext, RuleOptions


class EveryNthOptions(RuleOptions):
    every: int = Field(3, gt=0)


class EveryNthInference(Rule):
    """Alerts on every n-th prediction of a model (a toy rule with persistent state)."""

    id = "every_nth_inference"
    title = "A model made another n predictions."
    Options = EveryNthOptions
    event_types = frozenset({"model_inference"})
    regulation = "EU AI Act"
    article = "Art. 12"

    def on_event(self, event: Event, ctx: RuleContext) -> list[Alert]:
        count = ctx.state["count"] = ctx.state.get("count", 0) + 1
        if count % self.options.every:
            return []
        message = f"Model {event['model_id']!r} made its prediction number {count}."
        return [ctx.alert(message, [event.trigger()], event_time=event.timestamp, details={"count": count})]
'''


def test_custom_rule_from_module_and_class(embedded: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A custom Rule named module:Class gets its options validated and its state kept across restarts."""
    (tmp_path / "my_alert_rules.py").write_text(CUSTOM_RULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    rules = textwrap.dedent("""
        rules:
          access_outside_hours: {enabled: false}
        custom:
          - class: my_alert_rules:EveryNthInference
            every: 4
            severity: low
    """)
    with AuditTrail("serve", **embedded.options(), user="svc") as t:
        for i in range(6):
            t.log_model_inference("churn-v1", f"request-{i}", "stay", 0.9)
    assert make_alerter(embedded, rules).run(once=True).alerts == 1
    with AuditTrail("serve", **embedded.options(), user="svc") as t:
        for i in range(2):
            t.log_model_inference("churn-v1", f"request-{i}", "stay", 0.9)
    assert make_alerter(embedded, rules).run(once=True).alerts == 1
    alerts = published(embedded)
    assert [(a.rule_id, a.severity, a.regulation, a.details["count"]) for a in alerts] == [
        ("every_nth_inference", "low", "EU AI Act", 4), ("every_nth_inference", "low", "EU AI Act", 8)]
    with pytest.raises(RuleConfigError, match=r"<rules>:4: custom\.0\.every: Input should be greater than 0"):
        load_rules(text="custom:\n  - class: my_alert_rules:EveryNthInference\n    id: nth\n    every: 0\n")
    with pytest.raises(RuleConfigError, match=r"<rules>:3: custom\.0\.id: rule id 'bulk_access' is already used"):
        load_rules(text="custom:\n  - class: my_alert_rules:EveryNthInference\n    id: bulk_access\n")


BILLION_LAUGHS = """\
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
rules: {bulk_access: {threshold: *h}}
"""


def test_a_billion_laughs_rules_file_is_refused_before_it_expands(tmp_path: Path) -> None:
    """Anchors and aliases are refused at the first one, with its line; nothing is expanded or echoed."""
    path = tmp_path / "laughs.yaml"
    path.write_text(BILLION_LAUGHS)
    with pytest.raises(RuleConfigError) as caught:
        load_rules(path)
    message = str(caught.value)
    assert "anchors and aliases" in message and ":1" in message and len(message) < 400 and "lol" not in message


def test_an_oversized_rules_file_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    """A rules file past the size limit: one clear error naming the file."""
    path = tmp_path / "huge.yaml"
    path.write_text("# " + "x" * 5_000_000 + "\n")
    with pytest.raises(RuleConfigError, match="over the limit"):
        load_rules(path)
    with pytest.raises(RuleConfigError, match="over the limit"):
        load_rules(text="# " + "y" * 2_000_000)
