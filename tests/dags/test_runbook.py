"""docs/runbook.md covers every alert the product can send: each Slack message, each failure a
task can raise (the launchers', the image checks', the sensors', the freshness check's), each
kind of trainer error, each anomaly rule and each served-model alert. The texts are collected
from the code, so a new alert without a runbook entry fails here."""

from __future__ import annotations

import ast
import re

import pytest
from conftest import REPO

RUNBOOK = REPO / "docs" / "runbook.md"
OPERATORS = REPO / "plugins" / "operators"
TRAINER = REPO / "recommend_task" / "trainer"
# What a task raises that fails it (and so reaches Slack through the failure callback); the
# ValueErrors and ConfigErrors of a DAG author's mistakes fail the parse, not a run.
ALERTING = {"AirflowFailException", "AirflowException", "TrainerStepFailed", "TrainerStepRetriable",
            "AirflowSensorTimeout", "ImageNotAllowedError", "ImageNotFoundError"}


def skeleton(node: ast.expr) -> str | None:
    """A message's literal text with each placeholder as ``…``; None if it is not literal."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "…" for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = skeleton(node.left), skeleton(node.right)
        return None if left is None or right is None else left + right
    return None


def raised_messages() -> list[str]:
    """Every literal failure message raised in plugins/operators."""
    found = []
    for path in sorted(OPERATORS.rglob("*.py")):  # the launchers' too
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args
                    and getattr(node.exc.func, "id", None) in ALERTING):
                text = skeleton(node.exc.args[0])
                if text and text.strip("… "):
                    found.append(text)
    return found


def slack_first_lines() -> list[str]:
    """The first line of each Slack message template, Jinja as ``…`` (conditions dropped)."""
    from operators import slack

    templates = [value for name, value in vars(slack).items()
                 if name.isupper() and not name.startswith("_") and isinstance(value, str) and "{{" in value]
    lines = []
    for template in templates:
        first = template.splitlines()[0]
        first = re.sub(r"\{%.*?%\}", "", first)
        lines.append(re.sub(r"\{\{.*?\}\}", "…", first))
    return lines


def served_model_alerts() -> list[str]:
    """The literal part of each served-model alert line (trainer/feedback_task.py)."""
    tree = ast.parse((TRAINER / "feedback_task.py").read_text())
    [alerts_for] = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "alerts_for"]
    return [skeleton(call.args[0]) for call in ast.walk(alerts_for)
            if isinstance(call, ast.Call) and getattr(call.func, "attr", None) == "append"]


def error_classes() -> list[str]:
    tree = ast.parse((TRAINER / "core" / "errors.py").read_text())
    return [n.name for n in tree.body if isinstance(n, ast.ClassDef)]


def anomaly_rules() -> list[str]:
    return re.findall(r'Anomaly\("([a-z_]+)"', (TRAINER / "data" / "anomaly_rules.py").read_text())


def _normal(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("`", ""))


@pytest.fixture(scope="module")
def runbook() -> str:
    return _normal(RUNBOOK.read_text())


def test_the_collectors_find_what_the_code_sends():
    # Guards the collectors themselves: a refactor that hides the texts from them must fail here.
    assert len(slack_first_lines()) >= 5
    assert len(raised_messages()) >= 15
    assert len(served_model_alerts()) == 2 and all(served_model_alerts())
    assert {"TrainerError", "TransientError", "AnomalyError", "VerdictFailedError"} <= set(error_classes())
    assert len(anomaly_rules()) >= 5


@pytest.mark.parametrize("collect", [slack_first_lines, raised_messages, served_model_alerts])
def test_every_alert_text_is_in_the_runbook(runbook, collect):
    missing = [text for text in collect() if _normal(text) not in runbook]
    assert not missing, f"docs/runbook.md does not quote: {missing}"


@pytest.mark.parametrize("collect", [error_classes, anomaly_rules])
def test_every_error_kind_and_anomaly_rule_has_an_entry(runbook, collect):
    missing = [name for name in collect() if name not in runbook]
    assert not missing, f"docs/runbook.md has no entry for: {missing}"


def test_every_exit_code_of_the_contract_is_explained(runbook):
    from operators.contract import EXIT_PERMANENT, EXIT_TRANSIENT

    for phrase in (f"exit {EXIT_PERMANENT}: permanent, not retried",
                   f"exit {EXIT_TRANSIENT}: transient, retried", "crash, retried"):
        assert phrase in runbook, phrase


def test_the_runbook_is_linked_from_the_readme():
    assert "docs/runbook.md" in (REPO / "README.md").read_text()
    assert RUNBOOK.exists()
