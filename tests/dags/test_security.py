"""Parameters reach the trainer as argument lists, never through a shell, and no secret reaches
a rendered field, in every runtime."""

from __future__ import annotations

import ast
import datetime as dt
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import REPO, SLACK_TOKEN, fake_service_account_key, load_dagbag, local_step, shard_task

TRAINER_PY = str(REPO / ".venv" / "trainer" / "bin" / "python")


def _hostile(sentinel: Path) -> str:
    """A string param value that would create files if any shell ever saw it."""
    return (f"30; touch {sentinel}/semicolon $(touch {sentinel}/subshell) `touch {sentinel}/backtick`"
            f"\ntouch {sentinel}/newline | touch {sentinel}/pipe && touch {sentinel}/and")


def _context(task, params: dict):
    from operators.macros import MACROS

    when = dt.datetime(2026, 11, 30, 3, tzinfo=dt.UTC)
    return {"run_id": "r", "dag": SimpleNamespace(dag_id="recommend_train"), "task": task,
            "params": params, **MACROS,
            "dag_run": SimpleNamespace(logical_date=when, run_after=when, run_type="manual"),
            "ti": SimpleNamespace(try_number=1, map_index=-1, max_tries=2, task_id=task.task_id,
                                  xcom_pull=lambda task_ids: "img" if task_ids == "resolve_image" else None),
            "var": SimpleNamespace(value=SimpleNamespace(get=lambda key, default="": "recsys-trainer:dev"))}


@pytest.mark.parametrize("runtime", ["local", "docker", "vertex"])
def test_a_hostile_string_param_is_one_inert_argument_in_every_runtime(runtime, monkeypatch, tmp_path):
    """The rendered command is a list in which the value is one element, byte for byte: the
    Vertex container spec, the Docker API's Cmd array and the local subprocess all exec that
    list (no shell anywhere: the Docker operator is given a list, the local one an argv)."""
    monkeypatch.setenv("RECSYS_RUNTIME", runtime)
    hostile = _hostile(tmp_path)
    task = shard_task(load_dagbag().dags["recommend_train"].get_task("create_cf_matrices"))
    field = "arguments" if runtime == "local" else "command"
    params = {"lookback_days": hostile, "accept_anomalies": False}
    rendered = task.render_template(list(getattr(task, field)), _context(task, params))
    assert isinstance(rendered, list) and rendered.count(hostile) == 1
    assert rendered[rendered.index(hostile) - 1] == "--lookback-days"
    if runtime == "docker":
        assert isinstance(task.command, list)  # docker-py sends a list as the Cmd array, unparsed


@pytest.mark.parametrize("runtime", ["local", "docker", "vertex"])
def test_no_rendered_field_of_any_task_carries_a_credential(runtime, monkeypatch, tmp_path):
    """With a Google credentials file and the Slack webhook token in the environment, every
    template field of every task of every DAG, rendered as a worker renders it (and as the UI's
    Rendered Template tab shows it), names neither the file nor its key nor the token. The
    Docker and Vertex steps get an allowlisted environment (config.PASS_THROUGH_ENV), so the
    credentials never travel with a container spec; the local step is a child process given
    an allowlisted part of the worker's environment, which no rendered field copies."""
    creds = tmp_path / "recsys-sa-5ec7e7.json"
    key = fake_service_account_key(creds)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(creds))
    monkeypatch.setenv("AIRFLOW_CONN_SLACK_RECSYS", json.dumps(
        {"conn_type": "slackwebhook", "host": "http://127.0.0.1:9", "password": SLACK_TOKEN}))
    monkeypatch.setenv("RECSYS_RUNTIME", runtime)
    secrets = [str(creds), creds.name, key["private_key_id"], "NOT-A-REAL-KEY", SLACK_TOKEN,
               SLACK_TOKEN.rsplit("/", 1)[-1]]
    rendered_fields = 0
    for dag in load_dagbag().dags.values():
        params = {name: param.value for name, param in dag.params.items()}
        for task in map(shard_task, dag.tasks):
            for field in task.template_fields:
                text = repr(task.render_template(getattr(task, field), _context(task, params)))
                rendered_fields += 1
                assert not [s for s in secrets if s in text], f"{dag.dag_id}.{task.task_id}.{field}: {text}"
    assert rendered_fields > 20  # the walk really saw the trainer steps' fields


def test_the_local_launcher_runs_a_hostile_argument_without_any_shell_seeing_it(tmp_path):
    """The real subprocess path: the step gets the value as one argument, refuses it with its
    one-line error (exit 2), and not one of the shell constructs in it ran."""
    from operators.image_pinning import local_fingerprint
    from operators.trainer_exit import TrainerStepFailed

    hostile = _hostile(tmp_path)
    source = REPO / "recommend_task"
    op = local_step("create_cf_matrices_task", [
        "--project", "p", "--artifacts-uri", str(tmp_path / "a"), "--run-date", "2026-11-29",
        "--lookback-days", hostile], trainer_source=source,
        image=local_fingerprint("recsys-trainer:dev", source))
    with pytest.raises(TrainerStepFailed, match=r"bad arguments: argument --lookback-days: invalid int"):
        op.execute({})
    created = sorted(p.name for p in tmp_path.iterdir())
    assert not set(created) & {"semicolon", "subshell", "backtick", "newline", "pipe", "and"}, created


def _shell_uses(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "shell" and \
                getattr(node.value, "value", None) is True:
            found.append("shell=True")
        elif isinstance(node, ast.Attribute) and node.attr in ("system", "popen") and \
                getattr(node.value, "id", "") == "os":
            found.append(f"os.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and any("Bash" in a.name for a in node.names):
            found.append("BashOperator")
        elif isinstance(node, (ast.List, ast.Tuple)) and len(node.elts) >= 2 and \
                [getattr(e, "value", None) for e in node.elts[:2]] in (["sh", "-c"], ["bash", "-c"]):
            found.append("sh -c")
    return found


def test_no_launcher_or_dag_uses_a_shell():
    """Static guard for the above, on the code's syntax tree: no shell=True, os.system,
    os.popen, BashOperator or `sh -c` in the DAGs and their operators."""
    sources = [*(REPO / "dags").glob("*.py"), *(REPO / "plugins" / "operators").glob("*.py")]
    for path in sorted(sources):
        assert _shell_uses(ast.parse(path.read_text())) == [], path.relative_to(REPO)
    # The guard itself sees each of them.
    sample = 'import os\nfrom x import BashOperator\nos.system("a")\nrun(["sh", "-c", "a"], shell=True)'
    assert sorted(_shell_uses(ast.parse(sample))) == ["BashOperator", "os.system", "sh -c", "shell=True"]


def test_a_local_step_gets_none_of_the_workers_secrets_in_its_environment(unavailable_bigquery, tmp_path,
                                                                          monkeypatch):
    """A worker's environment holds Airflow's secrets (connections, the API server's JWT secret,
    the metadata DB's URL, the Fernet key). The local runtime's trainer process, started as a
    worker starts it and held mid-step by a BigQuery that answers 503 (as in test_lifeline.py),
    gets none of them: its environment as the kernel gave it (/proc/PID/environ) holds only the
    pass-through list (RECSYS_*, PATH, HOME, locale, TZ, TMPDIR, Google credentials, emulators)."""
    import contextlib
    import os
    import signal

    from test_lifeline import _script, _start, _trainer_pids

    secrets = {
        "AIRFLOW_CONN_SLACK_RECSYS": json.dumps({"conn_type": "slackwebhook", "password": SLACK_TOKEN}),
        "AIRFLOW__API_AUTH__JWT_SECRET": "jwt-secret-5ec7e7",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://airflow:db-pw-5ec7e7@db/airflow",
        "AIRFLOW__CORE__FERNET_KEY": "fernet-key-5ec7e7",
        "SLACK_API_TOKEN": "xoxb-5ec7e7",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    creds = tmp_path / "sa.json"
    fake_service_account_key(creds)
    needed = {"GOOGLE_APPLICATION_CREDENTIALS": str(creds), "RECSYS_TODAY": "2026-11-30", "TZ": "UTC",
              "LANG": "C.UTF-8", "TMPDIR": str(tmp_path)}
    for name, value in needed.items():
        monkeypatch.setenv(name, value)
    task, trainer = _start(_script(tmp_path), unavailable_bigquery, tmp_path)
    try:
        raw = Path(f"/proc/{trainer}/environ").read_bytes().decode()
    finally:
        for pid in [task.pid, *_trainer_pids(str(tmp_path))]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        task.wait()
    environ = dict(entry.split("=", 1) for entry in raw.split("\0") if entry)
    assert sorted(set(secrets) & set(environ)) == []
    assert [v for v in secrets.values() if v in raw] == []
    assert sorted(name for name in environ if name.startswith("AIRFLOW")) == []
    assert {name: environ.get(name) for name in needed} == needed
    assert environ["BIGQUERY_EMULATOR_HOST"] == unavailable_bigquery and environ["PATH"] == os.environ["PATH"]
