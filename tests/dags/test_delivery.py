"""The delivery and set-up files, checked against the repository they deliver: every file,
make target, substitution, placeholder and variable they name must exist, and every variable
the DAGs read must be documented. (Running them needs a Google Cloud project: not here.)"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import REPO

TRAINER = REPO / "recommend_task"
COMPOSER = REPO / "deploy" / "composer"
# Substitutions Cloud Build provides itself (its docs: "Substituting variable values").
BUILT_IN = {"PROJECT_ID", "PROJECT_NUMBER", "BUILD_ID", "LOCATION", "TRIGGER_NAME", "COMMIT_SHA",
            "REVISION_ID", "SHORT_SHA", "REPO_NAME", "REPO_FULL_NAME", "BRANCH_NAME", "TAG_NAME",
            "REF_NAME", "SERVICE_ACCOUNT_EMAIL", "SERVICE_ACCOUNT"}
SETUP_PLACEHOLDERS = {"PROJECT", "REGION", "BUCKET", "ENV", "BQ_LOCATION"}


def _cloudbuild(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _substitutions_used(config: dict) -> set[str]:
    """Names Cloud Build would substitute: ``$NAME`` and ``${NAME...}``, not ``$$`` escapes."""
    text = yaml.safe_dump(config["steps"]) + yaml.safe_dump(config.get("images", []))
    text = text.replace("$$", "")
    return set(re.findall(r"\$\{?([A-Z_][A-Z0-9_]*)", text))


def _step_scripts(config: dict) -> str:
    return "\n".join(str(a) for step in config["steps"] for a in step.get("args", []))


@pytest.mark.parametrize("path", ["recommend_task/cloudbuild.yaml", "deploy/cloudbuild-dags.yaml"])
def test_each_cloud_build_config_substitutes_only_what_it_defines_or_cloud_build_provides(path):
    config = _cloudbuild(REPO / path)
    used = _substitutions_used(config)
    defined = set(config.get("substitutions", {}))
    assert used - defined - BUILT_IN == set(), f"{path}: undefined substitutions"
    assert all(name.startswith("_") for name in defined), "user substitutions must start with _"
    assert defined - used == set(), f"{path}: substitutions never used"
    ids = [step["id"] for step in config["steps"]]
    assert len(ids) == len(set(ids))
    for step in config["steps"]:
        assert set(step.get("waitFor", [])) <= set(ids)


def test_the_trainer_build_tests_builds_and_starts_every_step_of_the_image():
    config = _cloudbuild(TRAINER / "cloudbuild.yaml")
    steps = {step["id"]: step for step in config["steps"]}
    assert list(steps) == ["unit-tests", "build", "smoke"]
    unit = steps["unit-tests"]["args"][-1]
    for name in re.findall(r"(requirements[\w.-]*\.lock|tests/[\w/]+\.py)", unit):
        assert (TRAINER / name).exists(), name  # the build's context is recommend_task/
    assert (TRAINER / "Dockerfile").exists() and steps["build"]["args"][-1] == "."
    smoke = re.search(r"for step in ([\w ]+); do", steps["smoke"]["args"][-1]).group(1).split()
    every_step = sorted(p.stem for p in (TRAINER / "trainer").glob("*_task.py"))
    assert sorted(smoke) == every_step
    # The smoke test runs the image the build just made, by its commit tag.
    assert steps["smoke"]["name"] == config["images"][0]


def test_the_dag_build_runs_the_dag_tests_then_syncs_plugins_before_dags():
    config = _cloudbuild(REPO / "deploy" / "cloudbuild-dags.yaml")
    steps = {step["id"]: step for step in config["steps"]}
    assert list(steps) == ["dag-tests", "sync-plugins", "sync-dags"]
    assert steps["dag-tests"]["args"] == ["-c", "make dag-tests"]
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^dag-tests:", makefile, re.M)
    listed = re.search(r"^DAG_TESTS := (.*?)\n\S", makefile, re.M | re.S).group(1)
    tests = listed.replace("\\\n", " ").split()
    assert tests and all((REPO / t).exists() for t in tests)
    assert "tests/dags/test_delivery.py" in tests
    assert steps["sync-plugins"]["waitFor"] == ["dag-tests"]
    assert steps["sync-dags"]["waitFor"] == ["sync-plugins"]
    scripts = {name: step["args"][-1] for name, step in steps.items()}
    assert re.search(r"gcloud storage rsync plugins/operators \S+/plugins/operators", scripts["sync-plugins"])
    # The plugin loader's ignore file goes with them (test_dag_integrity.py: what it keeps out).
    assert re.search(r"gcloud storage cp plugins/\.airflowignore \S+/plugins/\.airflowignore",
                     scripts["sync-plugins"])
    # The Recommender page: its package before the plugin file that imports it.
    sync = scripts["sync-plugins"]
    page = re.search(r"gcloud storage rsync plugins/recommender \S+/plugins/recommender\"? ", sync)
    plugin = re.search(r"gcloud storage cp plugins/recommender_plugin\.py \S+/plugins/recommender_plugin\.py",
                       sync)
    assert page and plugin and page.start() < plugin.start()
    assert sorted(p.name for p in (REPO / "plugins").iterdir() if p.name != "__pycache__") == [
        ".airflowignore", "operators", "recommender", "recommender_plugin.py"]  # all the build delivers
    assert re.search(r'gcloud storage rsync dags "[^"]+/dags"', scripts["sync-dags"])
    assert (REPO / "plugins" / "operators").is_dir() and (REPO / "dags").is_dir()
    # Airflow puts plugins/ on sys.path: the DAGs import operators.<module>, which is what is synced.
    for dag in (REPO / "dags").glob("*.py"):
        imported = {n.module.split(".")[0] for n in ast.walk(ast.parse(dag.read_text()))
                    if isinstance(n, ast.ImportFrom) and n.module}
        assert imported <= {"__future__", "datetime", "airflow", "operators"}, dag


def test_the_github_workflow_runs_make_test_with_the_interpreters_the_makefile_needs():
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "ci.yml").read_text())
    steps = workflow["jobs"]["make-test"]["steps"]
    runs = [step.get("run", "") for step in steps]
    assert any(re.match(r"make test\b", run) for run in runs)
    versions = next(step["with"]["python-version"] for step in steps
                    if step.get("uses", "").startswith("actions/setup-python")).split()
    assert sorted(versions) == ["3.11", "3.13"]
    makefile = (REPO / "Makefile").read_text()
    assert "PYTHON311 ?=" in makefile and "PYTHON313 ?=" in makefile  # overridable from the env
    # `make test` installs Debian packages only as root: the workflow installs them first.
    assert "docker-compose" in " ".join(runs) and "COMPOSE_CLI := /usr/bin/docker-compose" in makefile
    assert workflow["jobs"]["make-test"]["timeout-minutes"] >= 30


def _filled(path: Path) -> str:
    text = path.read_text()
    values = {"PROJECT": "acme-learn", "REGION": "europe-west1", "BUCKET": "acme-recsys", "ENV": "prod",
              "BQ_LOCATION": "EU"}
    assert set(re.findall(r"\$\{(\w+)\}", text)) <= SETUP_PLACEHOLDERS, path
    return re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], text)


def test_the_composer_templates_load_as_airflow_imports_them(tmp_path):
    from airflow.secrets.local_filesystem import load_connections_dict, load_variables

    variables, connections = tmp_path / "variables.json", tmp_path / "connections.json"
    variables.write_text(_filled(COMPOSER / "variables.json"))
    connections.write_text(_filled(COMPOSER / "connections.json"))
    loaded = load_variables(str(variables))
    assert loaded == {"recsys_trainer_image": "europe-west1-docker.pkg.dev/acme-learn/recsys/trainer:prod"}
    conns = load_connections_dict(str(connections))
    assert set(conns) == {"recsys_gcp"}
    gcp = conns["recsys_gcp"]
    assert gcp.conn_type == "google_cloud_platform" and gcp.extra_dejson["project"] == "acme-learn"
    # No secret in a template: no password, no key, and the Slack connection comes from Secret Manager.
    assert not gcp.password and not {"keyfile_dict", "key_path"} & set(gcp.extra_dejson)
    assert "slack" not in connections.read_text().lower()


def _environment_template() -> dict[str, str]:
    lines = _filled(COMPOSER / "environment.env").splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


def _variables_the_dags_read() -> set[str]:
    """Every RECSYS_* name plugins/operators reads from the environment (its source, scanned)."""
    names = set()
    for path in (REPO / "plugins" / "operators").glob("*.py"):
        names |= set(re.findall(r"\"(RECSYS_[A-Z0-9_]+)\"", path.read_text()))
    return names


def test_the_composer_environment_template_configures_the_vertex_runtime(monkeypatch):
    env = _environment_template()
    read = _variables_the_dags_read()
    assert set(env) <= read, f"set but never read: {set(env) - read}"
    assert not {k for k in env if "EMULATOR" in k}
    for key in list(os.environ):
        if key.startswith("RECSYS_") or key.endswith("_EMULATOR_HOST"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from operators import config

    cfg = config.load()
    assert (cfg.runtime, cfg.project, cfg.gcp_conn_id) == ("vertex", "acme-learn", "recsys_gcp")
    assert cfg.artifacts_uri == "gs://acme-recsys/recsys"
    assert cfg.image_allowlist == ("europe-west1-docker.pkg.dev/acme-learn/recsys/trainer:",)
    assert cfg.machine_type("train_task") == "n1-highmem-8"
    # The Variable's image is inside the allowlist the same set-up configures.
    image = json.loads(_filled(COMPOSER / "variables.json"))["recsys_trainer_image"]
    assert image.startswith(cfg.image_allowlist)


def test_every_environment_variable_the_dags_read_is_documented_in_the_readme():
    readme = (REPO / "README.md").read_text()
    documented = set(re.findall(r"`(RECSYS_[A-Z0-9_]+)`", readme))
    missing = _variables_the_dags_read() - documented
    assert not missing, f"read by plugins/operators but not in README.md: {sorted(missing)}"


def test_the_setup_script_names_only_files_that_exist_and_fills_every_placeholder():
    script = (COMPOSER / "setup.sh").read_text()
    subprocess.run(["bash", "-n", str(COMPOSER / "setup.sh")], check=True)
    for name in re.findall(r"((?:deploy|docker|requirements)[\w/.-]*\.(?:json|txt|env))", script):
        assert (REPO / name).exists(), name
    exported = set(re.search(r"export ([^\n]+)", script).group(1).replace("=", " ").split())
    for template in ("variables.json", "connections.json", "environment.env"):
        assert set(re.findall(r"\$\{(\w+)\}", (COMPOSER / template).read_text())) <= exported
    # Existing Variables and Connections are never overwritten by a re-run.
    commands = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("#"))
    assert "--overwrite" not in commands
