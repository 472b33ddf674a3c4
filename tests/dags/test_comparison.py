"""docs/comparison.md cannot rot: every file it cites exists, every test it cites is one the suites
collect and asserts more than that a file exists, and it covers what it promises. (That the cited
tests passed in the same run is checked at the end of `make test`: tests/cited_tests.py.)"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "tests"))
import cited_tests  # stdlib-only, shared with run-suites.sh's final check

SUITE_DIRS = ("tests/dags/", "tests/local/", "tests/docker/", "recommend_task/tests/")
CAPABILITIES = (
    "run the trainer container on a managed service", "wait without a polling script", "cancel on kill",
    "input-readiness sensors", "slack on success and failure", "cron without catch-up",
    "re-running only the failed step", "trigger with parameters from the ui", "backfill",
    "one immutable image per run", "independent ci for trainer and dags", "pin the pipeline version",
    "logs", "per-step tasks on one image", "evaluation and a quality gate",
    "monotonic promotion and rollback",
    "atomic, idempotent publishing", "data-triggered runs", "scale past one machine",
    "local development without the cloud", "docker-compose", "dag (pipeline) tests in ci",
    "supported airflow versions and cloud composer", "lineage in the platform's lineage tool",
    "a human decision for a suspicious day")
KFP_PIECES = ("AI Platform Pipelines", "ml_engine_op", "the pod that waited", "dsl.ExitHandler",
              "send_to_slack_op", "{{workflow.status}}",
              "create_recurring_run(max_concurrency=1, no_catchup=True)",
              "recurring-run renewal", "gcloud ai-platform jobs describe",
              "one Cloud Build trigger per directory")
TRAINING_INPUT = ("scaleTier", "masterType", "masterConfig.imageUri", "args", "region", "jobDir")


def _function(test_id: str) -> ast.FunctionDef:
    path, name = test_id.split("::")
    assert path.startswith(SUITE_DIRS) and Path(path).name.startswith("test_"), \
        f"{test_id}: not in a file the suites collect ({', '.join(SUITE_DIRS)}, test_*.py)"
    assert (REPO / path).is_file(), f"{test_id}: no file {path}"
    tree = ast.parse((REPO / path).read_text())
    found = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name]
    assert found and name.startswith("test_"), f"{test_id}: no module-level test function {name} in {path}"
    return found[0]


def _checks(fn: ast.FunctionDef) -> list[ast.AST]:
    """The checks a test makes: asserts, pytest.raises / pytest.fail, and calls of helpers that
    assert (any call whose name starts with check_/assert_/expect or wait_for)."""
    checks = []
    for node in ast.walk(fn):
        if isinstance(node, ast.Assert):
            checks.append(node)
        elif isinstance(node, ast.Call):
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            if name in ("raises", "fail") or \
                    name.startswith(("check_", "assert_", "expect", "wait_for", "days_match")):
                checks.append(node)
    return checks


def _only_existence(check: ast.AST) -> bool:
    test = check.test if isinstance(check, ast.Assert) else None
    if not isinstance(test, ast.Call):
        return False
    name = getattr(test.func, "attr", getattr(test.func, "id", ""))
    return name in ("exists", "is_file", "is_dir", "isfile", "isdir")


def _assert_of_substance(test_id: str) -> None:
    """The cited test exists in a suite `make test` runs and checks more than that a file exists."""
    checks = _checks(_function(test_id))
    assert checks, f"{test_id} checks nothing"
    assert not all(_only_existence(c) for c in checks), f"{test_id} only checks that a file exists"


def test_every_capability_cites_an_existing_file_and_a_collected_test_of_substance():
    rows = cited_tests.table("Capabilities")
    names = [row[0].lower() for row in rows]
    missing = [c for c in CAPABILITIES if not any(c in name for name in names)]
    assert not missing, f"rows missing from docs/comparison.md: {missing}"
    for row in rows:
        assert len(row) == 5, f"{row[0]}: {len(row)} columns, want 5"
        files, tests = cited_tests.citations(row[-1])
        assert files and tests, f"{row[0]}: this project's cell must name a file and a test"
        for path in files:
            assert (REPO / path).exists(), f"{row[0]}: cited file {path} does not exist"
        for test_id in tests:
            _assert_of_substance(test_id)


def test_every_test_and_file_the_fault_and_security_matrices_cite_exists_and_checks_something():
    """docs/reliability.md's rows are guarantees only through the tests they name."""
    for section in ("Faults", "Security"):
        rows = cited_tests.table(section, cited_tests.RELIABILITY)
        assert rows, f"docs/reliability.md has no table under ## {section}"
        for row in rows:
            cited = [cited_tests.citations(cell) for cell in row]
            tests = [t for _, ts in cited for t in ts]
            assert tests or (section == "Security" and "operations.md" in row[-1]), \
                f"{section}: {row[0][:60]}: names no test"
            for path in (f for fs, ts in cited if ts for f in fs):
                assert (REPO / path).exists(), f"{row[0][:60]}: cited file {path} does not exist"
            for test_id in tests:
                _assert_of_substance(test_id)


def test_the_migration_map_covers_every_piece_of_the_kfp_set_up():
    rows = cited_tests.table("Migration map: the KFP set-up, piece by piece")
    text = "\n".join(row[0] for row in rows)
    missing = [piece for piece in KFP_PIECES if piece not in text]
    assert not missing, f"KFP pieces without a row: {missing}"
    for row in rows:
        files, _ = cited_tests.citations(row[-1])
        assert files and all((REPO / f).exists() for f in files), row


def test_every_ai_platform_training_input_field_maps_to_what_this_project_sets():
    rows = cited_tests.table("What changed in Google Cloud since the KFP set-up")
    fields = {re.search(r"`([^`]+)`", row[0]).group(1) for row in rows}
    assert set(TRAINING_INPUT) <= fields, fields
    assert all(row[1] and row[2] for row in rows), rows


def test_the_cost_section_quotes_the_benchmarks_it_cites():
    """The measured figures in the cost section are the ones docs/benchmarks.md records."""
    cost = (REPO / "docs" / "comparison.md").read_text().split("## What it costs", 1)[1]
    benchmarks = (REPO / "docs" / "benchmarks.md").read_text()
    figures = ("21.0", "20.3", "4.5", "22.4", "2.8", "5.0", "73.4", "47.7", "1.54", "0.62")
    for figure in figures:
        assert figure in cost, f"{figure} missing from the cost section"
        assert figure in benchmarks, f"{figure} is not a figure of docs/benchmarks.md"
    assert "not measured here" in cost  # Vertex provisioning: said so, not invented


@pytest.mark.parametrize("junit", [
    ('<testcase file="tests/dags/test_x.py" name="test_a[local]"/>'
     '<testcase file="tests/dags/test_x.py" name="test_a[vertex]"><skipped/></testcase>', "skipped"),
    ('<testcase file="tests/test_y.py" name="test_b"><failure/></testcase>', "failure"),
    ('<testcase file="tests/dags/test_x.py" name="test_a"/>', "passed"),
])
def test_the_final_check_reads_outcomes_per_cited_test_from_the_suites_reports(tmp_path, junit):
    report, want = junit
    (tmp_path / "suites").write_text("dags .\ntrainer recommend_task\n")
    (tmp_path / ("trainer.xml" if "test_y" in report else "dags.xml")).write_text(
        f"<testsuites><testsuite>{report}</testsuite></testsuites>")
    outcomes = cited_tests.outcomes(tmp_path)
    key = "recommend_task/tests/test_y.py::test_b" if "test_y" in report else "tests/dags/test_x.py::test_a"
    assert want in outcomes[key] and (want == "passed") == (set(outcomes[key]) == {"passed"}), outcomes
