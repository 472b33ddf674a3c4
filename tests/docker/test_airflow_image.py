"""The Airflow image of docker-compose.yaml (docker/airflow/Dockerfile), built in a real engine:
Airflow at the locked version, consistent dependencies, the official image's `airflow` user, and
the project's DAGs import inside it in the docker runtime (as the compose stack mounts them)."""

from __future__ import annotations

import json
import re
import subprocess

from dags_conftest import DAGS, PLUGINS, REPO

PARSE = """
import json, os
from airflow.dag_processing.dagbag import BundleDagBag
bag = BundleDagBag(dag_folder="/opt/airflow/dags", bundle_path="/opt/airflow/dags")
print(json.dumps({"dags": sorted(bag.dag_ids), "errors": bag.import_errors,
                  "runtime": os.environ["RECSYS_RUNTIME"]}))
"""


def _run(image: str, *command: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", "run", "--rm", "--network", "none", *kwargs.pop("docker_args", ()),
                           image, *command], capture_output=True, text=True, **kwargs)


def test_the_airflow_image_has_the_locked_airflow_and_user(airflow_image):
    locked = re.search(r"^apache-airflow==(\S+)", (REPO / "requirements.lock").read_text(), re.MULTILINE)
    assert _run(airflow_image, "airflow", "version").stdout.strip() == locked.group(1)
    assert _run(airflow_image, "id", "-u").stdout.strip() == "50000"
    checked = _run(airflow_image, "pip", "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_dags_import_inside_the_airflow_image_in_the_docker_runtime(airflow_image):
    parsed = _run(airflow_image, "python", "-c", PARSE, docker_args=(
        "-v", f"{DAGS}:/opt/airflow/dags:ro", "-v", f"{PLUGINS}:/opt/airflow/plugins:ro",
        "-e", "RECSYS_RUNTIME=docker", "-e", "AIRFLOW__CORE__LOAD_EXAMPLES=False",
        "-e", "PYTHONPATH=/opt/airflow/plugins"))
    assert parsed.returncode == 0, parsed.stderr[-3000:]
    result = json.loads(parsed.stdout.strip().splitlines()[-1])
    assert result == {"dags": ["recommend_feedback", "recommend_forget", "recommend_freshness",
                               "recommend_predict", "recommend_rollback", "recommend_train"],
                      "errors": {}, "runtime": "docker"}
