"""Rules files: YAML that enables, tunes and adds rules; errors name the call, file, line, field and rule.

    rules:                      # built-in rules by id: on with their defaults, or once given their facts
      bulk_access: {threshold: 5000, window: 30m}       # needs a threshold: off until it has one
      access_outside_hours: {timezone: Europe/Berlin, start: "08:00", end: "18:00"}
      operation_not_closed: {enabled: false}
    custom:                     # your own Rule subclasses, as module:Class, with their options
      - class: mycompany.alert_rules:LargeExport
        severity: critical
        limit: 3
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from secureml.alerting.builtin import BUILTIN_RULES
from secureml.alerting.exceptions import RuleConfigError
from secureml.alerting.rule import Rule, RuleOptions

Location = tuple[str | int, ...]
MAX_RULES_FILE_CHARS = 1_000_000


class RulesFile(BaseModel):
    """The top level of a rules file."""

    model_config = ConfigDict(extra="forbid")

    rules: dict[str, dict[str, Any] | None] = {}
    custom: list[dict[str, Any]] = []


class _Document:
    """A parsed rules file with its YAML node tree, to find the line of a field."""

    def __init__(self, text: str, name: str, call: str) -> None:
        self.name = name
        self.call = call
        if len(text) > MAX_RULES_FILE_CHARS:
            raise RuleConfigError(f"is {len(text):,} characters, over the limit of {MAX_RULES_FILE_CHARS:,} for "
                                  "a rules file", path=name, call=call)
        try:
            for parsed in yaml.parse(text, Loader=yaml.SafeLoader):  # events only: nothing expanded yet
                if isinstance(parsed, yaml.AliasEvent) or getattr(parsed, "anchor", None):
                    raise RuleConfigError("anchors and aliases (&name, *name) are not allowed in a rules file "
                                          "(they can expand a small file into gigabytes); write the values out",
                                          path=name, line=parsed.start_mark.line + 1, call=call)
            self.root = yaml.compose(text, Loader=yaml.SafeLoader)
            self.data = yaml.safe_load(text)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            raise RuleConfigError(f"not valid YAML: {exc.problem or exc}", path=name,
                                  line=mark.line + 1 if mark else None, call=call) from None

    def line(self, loc: Location) -> int | None:
        """Line of the deepest node of ``loc`` present in the file (the key's line for mapping entries)."""
        node = self.root
        line = node.start_mark.line + 1 if node is not None else None
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                match = next(((k, v) for k, v in node.value if k.value == str(part)), None)
                if match is None:
                    break
                line, node = match[0].start_mark.line + 1, match[1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                break
        return line

    def fail(self, problem: str, loc: Location) -> RuleConfigError:
        """An error at ``loc``, naming its line and dotted field path."""
        rule = str(loc[1]) if len(loc) > 1 and loc[0] == "rules" else None
        return RuleConfigError(problem, path=self.name, line=self.line(loc), field=".".join(map(str, loc)) or None,
                               rule=rule, call=self.call)

    def invalid(self, exc: ValidationError, prefix: Location) -> RuleConfigError:
        """The first pydantic error (and how many more) at its line."""
        errors = exc.errors()
        first = errors[0]
        got = first.get("input")
        shown = f" (got {got!r})" if first["type"] != "missing" and not isinstance(got, (dict, list)) else ""
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        return self.fail(f"{first['msg']}{shown}{more}", prefix + tuple(first["loc"]))


def load_rules(path: str | os.PathLike[str] | None = None, *, text: str | None = None) -> list[Rule]:
    """The rules that run under a rules file (or YAML ``text``); without either, every built-in that needs no facts.

    Built-in rules are on with their defaults, except those that need the organisation's facts
    (working hours, who may read sensitive columns, a bulk threshold): those run once the file
    gives them. ``configured_rules`` also returns the rules that are off.
    """
    return [rule for rule in configured_rules(path, text=text) if rule.active]


def configured_rules(path: str | os.PathLike[str] | None = None, *, text: str | None = None) -> list[Rule]:
    """Every built-in rule (on or off) and every custom rule of a rules file, with their options."""
    if path is None and text is None:
        return [rule() for rule in BUILTIN_RULES.values()]
    name = str(path) if path is not None else "<rules>"
    call = f"load_rules({name!r})" if path is not None else "load_rules(text=...)"
    if text is None:
        try:
            if Path(name).stat().st_size > 4 * MAX_RULES_FILE_CHARS:  # never read a huge file whole to refuse it
                raise RuleConfigError(f"is {Path(name).stat().st_size:,} bytes, over the limit for a rules file",
                                      path=name, call=call)
            text = Path(name).read_text(encoding="utf-8")
        except OSError as exc:
            raise RuleConfigError(f"cannot read the rules file: {exc.strerror}; check the --rules path",
                                  path=name, call=call) from None
    doc = _Document(text, name, call)
    if doc.data is not None and not isinstance(doc.data, dict):
        raise doc.fail("the rules file must be a mapping with 'rules:' and/or 'custom:'", ())
    try:
        spec = RulesFile.model_validate(doc.data or {})
    except ValidationError as exc:
        raise doc.invalid(exc, ()) from None
    for rule_id in spec.rules:
        if rule_id not in BUILTIN_RULES:
            raise doc.fail(f"unknown built-in rule {rule_id!r}; known: {', '.join(BUILTIN_RULES)} "
                           "(add your own rules under 'custom:')", ("rules", rule_id))
    rules = [_build(doc, rule, spec.rules.get(rule_id) or {}, ("rules", rule_id), None)
             for rule_id, rule in BUILTIN_RULES.items()]
    taken = set(BUILTIN_RULES)
    for index, entry in enumerate(spec.custom):
        where: Location = ("custom", index)
        options = dict(entry)
        rule_class = _import_rule(doc, options.pop("class", None), (*where, "class"))
        rule_id = options.pop("id", None) or rule_class.id or rule_class.__name__
        if rule_id in taken:
            raise doc.fail(f"rule id {rule_id!r} is already used: give this rule another 'id'", (*where, "id"))
        taken.add(rule_id)
        rules.append(_build(doc, rule_class, options, where, str(rule_id)))
    return rules


def _build(doc: _Document, rule_class: type[Rule], raw: dict[str, Any], where: Location,
           rule_id: str | None) -> Rule:
    try:
        options: RuleOptions = rule_class.Options.model_validate(raw)
    except ValidationError as exc:
        raise doc.invalid(exc, where) from None
    try:
        return rule_class(options, rule_id=rule_id)
    except RuleConfigError as exc:  # it needs options the file does not give
        raise doc.fail(exc.problem, (*where, exc.field) if exc.field else where) from None
    except Exception as exc:  # noqa: BLE001 - a custom rule's constructor may raise anything
        raise doc.fail(f"{rule_class.__name__} rejected its options: {exc}", where) from None


def _import_rule(doc: _Document, spec: Any, where: Location) -> type[Rule]:
    """The Rule subclass named ``module:Class``."""
    hint = "name a Rule subclass as module:Class, e.g. mycompany.alert_rules:LargeExport"
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise doc.fail(f"{hint} (got {spec!r})", where)
    module_name, class_name = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise doc.fail(f"cannot import {module_name!r}: {exc}; put it on PYTHONPATH", where) from None
    found = getattr(module, class_name, None)
    if not (isinstance(found, type) and issubclass(found, Rule)):
        raise doc.fail(f"{spec!r} is not a Rule subclass: {hint}", where)
    return found

