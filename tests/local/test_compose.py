"""Static checks of docker-compose.yaml and the images it builds (no Docker engine needed).

The compose stack cannot be started on the machines this project is built on, so what can be
checked without an engine is checked here: the services and how they wait for each other, the
mounts and ports, every environment variable the DAGs and the trainer read, that the values
point at services and ports that exist, and that the image tags agree with the lock files.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yaml"
AIRFLOW_DOCKERFILE = REPO / "docker" / "airflow" / "Dockerfile"
EMULATORS_DOCKERFILE = REPO / "docker" / "emulators" / "Dockerfile"
TRAINER_DOCKERFILE = REPO / "recommend_task" / "Dockerfile"
CONFIG_PY = REPO / "plugins" / "operators" / "config.py"
TRAINER_ENV_FILES = (REPO / "recommend_task" / "trainer" / "step" / "cli.py",
                     REPO / "recommend_task" / "trainer" / "storage" / "clients.py")

AIRFLOW_COMMANDS = {
    "airflow-init": ["bash", "-c", "airflow db migrate && airflow pools import /opt/airflow/pools.json"],
    "airflow-apiserver": ["airflow", "api-server"],
    "airflow-scheduler": ["airflow", "scheduler"],
    "airflow-dag-processor": ["airflow", "dag-processor"],
    "airflow-triggerer": ["airflow", "triggerer"],
}
AIRFLOW_SERVICES = tuple(AIRFLOW_COMMANDS)
AIRFLOW_DAEMONS = tuple(s for s in AIRFLOW_SERVICES if s != "airflow-init")
EXPECTED_SERVICES = {*AIRFLOW_SERVICES, "postgres", "bigquery", "gcs", "slack-receiver",
                     "trainer-image", "seed-events"}
# Run once and exit 0; everything else runs until stopped and must report its health.
ONE_SHOT = {"airflow-init", "trainer-image", "seed-events"}
PUBLISHED = {"airflow-apiserver": {8080}, "bigquery": {9050, 9060}, "gcs": {4443}}

# Variables the code reads that the compose stack may leave unset, each with the reason.
# Names ending in "*" are prefixes.
OPTIONAL_ENV = {
    "RECSYS_VERTEX_*": "Vertex AI runtime only; compose runs RECSYS_RUNTIME=docker",
    "RECSYS_GCP_CONN_ID": "Google connection for sensors and Vertex; unused with the emulators",
    "RECSYS_TRAINER_PYTHON": "local runtime only (the trainer runs in its image here)",
    "RECSYS_TRAINER_SOURCE": "local runtime only: the sources its image reference is pinned to",
    "RECSYS_STATUS_NAME": "set per step by the operators (the Airflow attempt), never by a deployment",
    "RECSYS_TIME_BUDGET_S": "set per step by the operators (the task's timeout), never by a deployment",
    "RECSYS_TODAY": "the trainer's clock, set by the test suites only; unset it is the real UTC date",
    "RECSYS_STEP_MEMORY_GIB": "lowers the memory a step's pre-flight plans for; unset it is the "
    "container's or machine's",
    "GOOGLE_APPLICATION_CREDENTIALS": "passed on to a local-runtime step where set (Composer: the "
    "environment's identity); the compose stack uses the emulators' anonymous credentials",
    "RECSYS_AIRFLOW_RUN_ID": "set per step by the operators (the Airflow attempt)",
    "RECSYS_TRY_NUMBER": "set per step by the operators (the Airflow attempt)",
    "RECSYS_TRAINER_IMAGE": "set per step by the operators (the run's pinned image)",
    "RECSYS_LAUNCHER_PID": "set per step by the local launcher (its own pid), never by a deployment",
    "RECSYS_DATA_CHECK": "set per step by recommend_train (check_events), never by a deployment",
    "RECSYS_ACCEPTED_BY": "set per step by recommend_train (who approved the day), never by a deployment",
    "RECSYS_ACCEPTED_AT": "set per step by recommend_train (when the day was approved)",
    "RECSYS_ACCEPT_REASON": "set per step by recommend_train (the approver's reason)",
    "RECSYS_APPROVAL_TIMEOUT_S": "a decision's wait: the 4 h default suits a local stack too",
    "RECSYS_SLACK_TIMEOUT_S": "the 5 s default is what every environment uses",
    "RECSYS_BQ_WRITERS_POOL": "the default is the pool airflow-init imports from pools.json",
    "RECSYS_TRAINER_POOL": "the default is the pool airflow-init imports from pools.json",
    "RECSYS_LOG_LEVEL": "trainer log level; INFO by default",
    "RECSYS_GCS_RETRY_DEADLINE_S": "the client's own 2-minute default suits the emulator too",
    "RECSYS_RECOMMENDATIONS_RETENTION_DAYS": "retention: the 90-day default suits a local stack too",
    "RECSYS_METRICS_RETENTION_DAYS": "retention: the 730-day default suits a local stack too",
    "RECSYS_KEEP_MODELS": "retention: the default of 7 models suits a local stack too",
    "RECSYS_FRESHNESS_DEADLINE_HOUR": "the production default (08:00 UTC) suits a local stack too",
    "RECSYS_EVENTS_*": "wait_for_events: the production defaults (6 h, every 5 min, half the median)",
    "GOOGLE_CLOUD_PROJECT": "the trainer's fallback when RECSYS_GCP_PROJECT is unset; it is set",
}


# --- helpers -------------------------------------------------------------------------------------

def _load_compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return _load_compose()


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def interpolate(value: str) -> str:
    """What compose makes of ``${NAME:-default}`` when NAME is unset."""
    return _INTERPOLATION.sub(lambda m: m.group(2) or "", value)


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # KEY=VALUE list form
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {k: None if v is None else interpolate(str(v)) for k, v in env.items()}


def command(service: dict) -> list[str]:
    cmd = service.get("command")
    assert isinstance(cmd, list), f"command should be a list (exec form), got {cmd!r}"
    return [interpolate(str(part)) for part in cmd]


def flag(argv: list[str], name: str) -> str:
    assert name in argv, f"{name} missing from {argv}"
    return argv[argv.index(name) + 1]


def bind_mounts(service: dict) -> dict[str, str]:
    """container path -> source for short-syntax volumes (``SOURCE:TARGET[:MODE]``)."""
    out = {}
    for volume in service.get("volumes", []):
        assert isinstance(volume, str), f"use the short volume syntax: {volume!r}"
        source, target, *_ = volume.split(":")
        out[target] = source
    return out


def published_ports(service: dict) -> set[int]:
    ports = set()
    for spec in service.get("ports", []):
        host, _, container = interpolate(str(spec)).rpartition(":")
        assert host == container, f"publish ports on the same number: {spec!r}"
        ports.add(int(container))
    return ports


def dockerfile_from(path: Path) -> str:
    """The base image a plain `docker build` uses (a FROM ${ARG} resolves to the ARG's default)."""
    text = path.read_text()
    images = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    assert len(images) == 1, f"{path}: expected one FROM, got {images}"
    arg = re.fullmatch(r"\$\{(\w+)\}", images[0])
    if arg:
        default = re.search(rf"^ARG\s+{arg.group(1)}=(\S+)", text, flags=re.MULTILINE)
        assert default, f"{path}: FROM {images[0]} without an ARG default"
        return default.group(1)
    return images[0]


def dockerfile_cmd(path: Path) -> list[str]:
    text = path.read_text().replace("\\\n", " ")
    match = re.search(r"^CMD\s+(\[.*\])\s*$", text, flags=re.MULTILINE)
    assert match, f"{path}: no exec-form CMD"
    return json.loads(match.group(1))


def lock_pin(lock: Path, package: str) -> str:
    match = re.search(rf"^{re.escape(package)}==(\S+)", lock.read_text(), flags=re.MULTILINE)
    assert match, f"{package} is not pinned in {lock}"
    return match.group(1)


def lock_python(lock: Path) -> str:
    match = re.search(r"--python-version (\d+\.\d+)", lock.read_text())
    assert match, f"{lock}: no --python-version in its header"
    return match.group(1)


def _module_strings(tree: ast.Module) -> dict[str, str]:
    return {t.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
            for t in node.targets
            if isinstance(t, ast.Name) and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)}


def env_reads(path: Path) -> set[str]:
    """Names a module reads with ``os.environ.get(X)``, ``os.environ[X]`` or ``os.getenv(X)``,
    X a string literal or a module-level string constant."""
    tree = ast.parse(path.read_text())
    constants = _module_strings(tree)

    def name_of(node: ast.expr) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.Name):
            return constants.get(node.id)
        return None

    def is_environ(node: ast.expr) -> bool:
        return isinstance(node, ast.Attribute) and node.attr == "environ"

    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args and isinstance(node.func, ast.Attribute):
            if (node.func.attr == "get" and is_environ(node.func.value)) or node.func.attr == "getenv":
                names.add(name_of(node.args[0]))
        elif isinstance(node, ast.Subscript) and is_environ(node.value):
            names.add(name_of(node.slice))
    return {n for n in names if n}


def pass_through_env() -> tuple[str, ...]:
    tree = ast.parse(CONFIG_PY.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "PASS_THROUGH_ENV" for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    raise AssertionError("PASS_THROUGH_ENV not found in plugins/operators/config.py")


def dag_env_names() -> set[str]:
    """Every variable the DAGs read: RECSYS_* named in config.py (and the rest of dags/ and
    plugins/), the variables passed through to the trainer, and direct environment reads."""
    names = set(re.findall(r"RECSYS_[A-Z0-9_]+", CONFIG_PY.read_text()))
    for path in [*(REPO / "dags").glob("*.py"), *(REPO / "plugins" / "operators").glob("*.py")]:
        names |= set(re.findall(r"RECSYS_[A-Z0-9_]+", path.read_text())) | env_reads(path)
    return names | set(pass_through_env())


def trainer_env_names() -> set[str]:
    return set().union(*(env_reads(path) for path in TRAINER_ENV_FILES))


def is_optional(name: str) -> bool:
    return any(name.startswith(o[:-1]) if o.endswith("*") else name == o for o in OPTIONAL_ENV)


def trainer_image(services: dict) -> str:
    return interpolate(services["trainer-image"]["image"])


# --- the file and its services -------------------------------------------------------------------

def test_yaml_parses_and_defines_the_services(compose, services):
    assert isinstance(compose, dict) and isinstance(services, dict)
    missing = EXPECTED_SERVICES - set(services)
    assert not missing, f"services missing from docker-compose.yaml: {sorted(missing)}"


def _strings(node):
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)
    elif isinstance(node, str):
        yield node


def test_only_default_interpolations(compose):
    """A bare ``$NAME`` in a value would be replaced by compose (usually with nothing): values
    use ``${NAME:-default}`` or ``$$``."""
    stray, unset = [], []
    for value in _strings(compose):
        text = value.replace("$$", "")
        stray += [text[i:i + 20] for i in range(len(text))
                  if text[i] == "$" and not _INTERPOLATION.match(text, i)]
        unset += [m.group(0) for m in _INTERPOLATION.finditer(text) if m.group(2) is None]
    assert not stray, f"un-escaped $ in docker-compose.yaml: {stray}"
    assert not unset, f"interpolations without a default: {unset}"


def test_long_running_services_have_health_checks(services):
    for name, service in services.items():
        if name in ONE_SHOT:
            assert service.get("restart") == "no", f"{name} runs once and must not be restarted"
            continue
        check = service.get("healthcheck") or {}
        assert check.get("test") and check["test"] != ["NONE"] and not check.get("disable"), \
            f"{name} has no health check"
        assert check.get("interval") and check.get("retries"), f"{name}: health check timing"
        assert service.get("restart") in ("always", "unless-stopped"), f"{name}: restart policy"


def test_depends_on_waits_for_conditions(services):
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on must name a condition per service"
        for target, spec in depends.items():
            assert target in services, f"{name} depends on unknown service {target}"
            condition = (spec or {}).get("condition")
            expected = "service_completed_successfully" if target in ONE_SHOT else "service_healthy"
            assert condition == expected, f"{name} -> {target}: condition {condition!r}, not {expected}"


def test_airflow_waits_for_db_migration_and_emulators(services):
    assert set(services["airflow-init"]["depends_on"]) == {"postgres"}
    for name in AIRFLOW_DAEMONS:
        assert {"postgres", "airflow-init", "bigquery", "gcs", "slack-receiver"} <= set(
            services[name]["depends_on"]), name
    assert "trainer-image" in services["airflow-scheduler"]["depends_on"], \
        "the scheduler runs the trainer image (the docker launcher): it must be built first"
    for name in ("airflow-scheduler", "airflow-triggerer"):
        assert "airflow-apiserver" in services[name]["depends_on"], name


def test_airflow_services_share_one_image_and_run_their_component(services):
    builds = {json.dumps(services[n].get("build"), sort_keys=True) for n in AIRFLOW_SERVICES}
    images = {services[n].get("image") for n in AIRFLOW_SERVICES}
    assert len(builds) == 1 and len(images) == 1, "all Airflow services come from x-airflow-common"
    build = services["airflow-apiserver"]["build"]
    assert (REPO / build["context"] / build["dockerfile"]).resolve() == AIRFLOW_DOCKERFILE
    for name, expected in AIRFLOW_COMMANDS.items():
        assert command(services[name]) == expected, name
        assert services[name]["user"] == "${AIRFLOW_UID:-50000}:0", name


def test_airflow_mounts_dags_plugins_and_the_docker_socket(services):
    for name in AIRFLOW_SERVICES:
        mounts = bind_mounts(services[name])
        assert mounts.get("/opt/airflow/dags") == "./dags", name
        assert mounts.get("/opt/airflow/plugins") == "./plugins", name
        assert mounts.get("/var/run/docker.sock") == "/var/run/docker.sock", name
    env = environment(services["airflow-scheduler"])
    socket_path = urlsplit(env["RECSYS_DOCKER_URL"])
    assert socket_path.scheme == "unix"
    assert "/" + (socket_path.netloc + socket_path.path).lstrip("/") == "/var/run/docker.sock"


def test_ports_are_published(services):
    for name, ports in PUBLISHED.items():
        assert ports <= published_ports(services[name]), f"{name} should publish {sorted(ports)}"


def test_build_contexts_and_bind_mount_sources_exist(services):
    for name, service in services.items():
        build = service.get("build")
        if build:
            context = REPO / (build if isinstance(build, str) else build["context"])
            dockerfile = context / ("Dockerfile" if isinstance(build, str)
                                    else build.get("dockerfile", "Dockerfile"))
            assert dockerfile.is_file(), f"{name}: {dockerfile} missing"
        for target, source in bind_mounts(service).items():
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name}: {source} (for {target}) missing"


def test_inline_python_compiles(services):
    """``python -c CODE`` in commands and health checks: a syntax error would only show as a
    service that never becomes healthy."""
    snippets = 0
    for name, service in services.items():
        for argv in (service.get("command"), (service.get("healthcheck") or {}).get("test")):
            if isinstance(argv, list) and "python" in argv and "-c" in argv:
                compile(argv[argv.index("-c") + 1], f"{name}: python -c", "exec")
                snippets += 1
    assert snippets >= 2  # slack-receiver and bigquery health checks


# --- environment ---------------------------------------------------------------------------------

def test_env_name_collection_finds_what_the_code_reads():
    """Guards the collectors below: if they found nothing, every check would pass vacuously."""
    dag, trainer = dag_env_names(), trainer_env_names()
    assert {"RECSYS_RUNTIME", "RECSYS_IMAGE_ALLOWLIST", "RECSYS_DOCKER_NETWORK",
            "BIGQUERY_EMULATOR_HOST", "RECSYS_LOG_LEVEL"} <= dag
    assert {"RECSYS_GCP_PROJECT", "GOOGLE_CLOUD_PROJECT", "RECSYS_BQ_RETRY_DEADLINE_S",
            "BIGQUERY_STORAGE_EMULATOR_HOST", "STORAGE_EMULATOR_HOST"} <= trainer


def test_optional_env_list_is_current():
    read = dag_env_names() | trainer_env_names()
    for name in OPTIONAL_ENV:
        matches = [r for r in read if (r.startswith(name[:-1]) if name.endswith("*") else r == name)]
        assert matches, f"{name} is no longer read by the code: drop it from OPTIONAL_ENV"


def test_airflow_services_set_every_variable_the_dags_and_trainer_read(services):
    required = sorted(n for n in dag_env_names() | trainer_env_names() if not is_optional(n))
    for name in AIRFLOW_SERVICES:
        env = environment(services[name])
        missing = [n for n in required if not env.get(n)]
        assert not missing, f"{name} does not set {missing}"


def test_seed_events_sets_what_the_trainer_reads(services):
    env = environment(services["seed-events"])
    missing = sorted(n for n in trainer_env_names() if not is_optional(n) and not env.get(n))
    assert not missing, f"seed-events does not set {missing}"
    argv = command(services["seed-events"])
    assert argv[:3] == ["python", "-m", "trainer.seed_events"]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}|yesterday", flag(argv, "--end-date"))
    assert interpolate(services["seed-events"]["image"]) == trainer_image(services)
    for target in ("bigquery", "gcs", "trainer-image"):
        assert target in services["seed-events"]["depends_on"]


def test_airflow_settings(services):
    env = environment(services["airflow-scheduler"])
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"].lower() == "false"
    assert env["AIRFLOW__CORE__PARALLELISM"] == "4"
    assert env["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"].lower() == "true"
    assert "AIRFLOW__CORE__FERNET_KEY" in env
    for key in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY"):
        assert env[key] and "dev" in env[key], f"{key}: a fixed, visibly dev-only value"
    db = urlsplit(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    pg = environment(services["postgres"])
    assert db.scheme.startswith("postgresql") and db.hostname == "postgres"
    assert (db.username, db.password, db.path.lstrip("/")) == (
        pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"])
    execution = urlsplit(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert execution.hostname == "airflow-apiserver" and execution.path == "/execution/"
    assert execution.port in published_ports(services["airflow-apiserver"])


def test_simple_auth_manager_users_have_the_baked_in_passwords(services):
    env = environment(services["airflow-apiserver"])
    users = [u.split(":")[0] for u in env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"].split(",")]
    assert users == ["admin"]
    target = env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
    copies = dict(re.findall(r"^COPY\s+(?:--\S+\s+)*(\S+)\s+(\S+)\s*$",
                             AIRFLOW_DOCKERFILE.read_text().replace("\\\n", " "), flags=re.MULTILINE))
    assert target in copies.values(), f"{target} is not copied into the Airflow image"
    source = next(s for s, t in copies.items() if t == target)
    passwords = json.loads((REPO / source).read_text())
    assert set(users) <= set(passwords), "users without a password get a generated one"


def test_emulator_variables_point_at_the_emulator_services(services):
    env = environment(services["airflow-scheduler"])
    bq_cmd = dockerfile_cmd(EMULATORS_DOCKERFILE)
    bq = urlsplit(env["BIGQUERY_EMULATOR_HOST"])
    assert (bq.hostname, bq.port) == ("bigquery", int(flag(bq_cmd, "--port")))
    host, _, port = env["BIGQUERY_STORAGE_EMULATOR_HOST"].partition(":")
    assert (host, int(port)) == ("bigquery", int(flag(bq_cmd, "--grpc-port")))
    assert flag(bq_cmd, "--host") == "0.0.0.0"
    assert flag(bq_cmd, "--project") == env["RECSYS_GCP_PROJECT"]
    assert {int(flag(bq_cmd, "--port")), int(flag(bq_cmd, "--grpc-port"))} <= published_ports(
        services["bigquery"])
    assert flag(bq_cmd, "--data-dir") in bind_mounts(services["bigquery"])

    gcs_cmd = command(services["gcs"])
    gcs = urlsplit(env["STORAGE_EMULATOR_HOST"])
    assert (gcs.hostname, gcs.port) == ("gcs", int(flag(gcs_cmd, "-port")))
    assert flag(gcs_cmd, "-external-url") == env["STORAGE_EMULATOR_HOST"]
    assert environment(services["bigquery"])["STORAGE_EMULATOR_HOST"] == env["STORAGE_EMULATOR_HOST"]


def test_artifacts_bucket_is_created_by_the_gcs_emulator(services):
    env = environment(services["airflow-scheduler"])
    uri = urlsplit(env["RECSYS_ARTIFACTS_URI"])
    assert uri.scheme == "gs"
    seed = bind_mounts(services["gcs"]).get(flag(command(services["gcs"]), "-data"))
    assert seed, "the gcs -data folder is not mounted"
    assert (REPO / seed / uri.hostname).is_dir(), f"no bucket folder {uri.hostname} under {seed}"


def test_slack_connection_points_at_the_receiver(services):
    env = environment(services["airflow-scheduler"])
    conn_var = "AIRFLOW_CONN_" + env["RECSYS_SLACK_CONN_ID"].upper()
    conn = json.loads(env[conn_var])
    assert conn["conn_type"] == "slackwebhook" and conn["password"].startswith("/services/")
    host = urlsplit(conn["host"])
    receiver = services["slack-receiver"]
    assert host.hostname == "slack-receiver"
    assert host.port == int(flag(command(receiver), "--port"))
    assert bind_mounts(receiver)["/app/slack_receiver.py"] == "./docker/local/slack_receiver.py"
    assert flag(command(receiver), "--host") == "0.0.0.0", "the receiver must listen beyond loopback"


def test_trainer_image_is_the_variable_and_allowed(services):
    env = environment(services["airflow-scheduler"])
    assert env["RECSYS_RUNTIME"] == "docker"
    variable = "AIRFLOW_VAR_" + env["RECSYS_IMAGE_VARIABLE"].upper()
    image = trainer_image(services)
    assert env[variable] == image
    allowlist = [p.strip() for p in env["RECSYS_IMAGE_ALLOWLIST"].split(",") if p.strip()]
    assert any(image.startswith(prefix) for prefix in allowlist), (image, allowlist)
    build = services["trainer-image"]["build"]
    assert (REPO / build["context"] / build.get("dockerfile", "Dockerfile")).resolve() == TRAINER_DOCKERFILE


def test_network_is_named_for_the_trainer_containers(compose, services):
    name = compose["networks"]["default"]["name"]
    assert name == "recsys"
    for service in AIRFLOW_SERVICES:
        assert environment(services[service])["RECSYS_DOCKER_NETWORK"] == name


# --- images against the lock files ---------------------------------------------------------------

def test_airflow_base_image_matches_the_lock():
    image = dockerfile_from(AIRFLOW_DOCKERFILE)
    match = re.fullmatch(r"apache/airflow:(\d+\.\d+\.\d+)-python(\d+\.\d+)", image)
    assert match, image
    lock = REPO / "requirements.lock"
    assert match.group(1) == lock_pin(lock, "apache-airflow") == lock_pin(lock, "apache-airflow-core")
    assert match.group(2) == lock_python(lock)
    text = AIRFLOW_DOCKERFILE.read_text()
    assert re.search(r"pip install --no-cache-dir .*-r \S*requirements\.lock", text)
    assert re.search(r"^USER airflow$", text, flags=re.MULTILINE)


def test_emulator_image_matches_the_lock():
    lock = REPO / "docker" / "emulators" / "requirements.lock"
    image = dockerfile_from(EMULATORS_DOCKERFILE)
    assert re.fullmatch(r"python:3\.13(-slim)?", image), image
    assert lock_python(lock) == "3.13"
    assert lock_pin(lock, "local-bigquery") == "0.3.2"
    text = EMULATORS_DOCKERFILE.read_text()
    assert "requirements.lock" in text and "install_duckdb_extensions(" in text
    assert re.search(r"^USER (?!root)\S+", text, flags=re.MULTILINE), "run as a non-root user"
    # The extension wheels that install_duckdb_extensions() imports are in the lock.
    tree = ast.parse((REPO / "docker" / "emulators" / "emulators.py").read_text())
    modules = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                   and any(getattr(t, "id", "") == "DUCKDB_EXTENSION_MODULES" for t in n.targets))
    for module in modules:
        assert lock_pin(lock, module.replace("_", "-")) == lock_pin(lock, "duckdb")


def test_trainer_image_uses_python_311():
    assert re.fullmatch(r"python:3\.11(-slim)?", dockerfile_from(TRAINER_DOCKERFILE))
    assert lock_python(REPO / "recommend_task" / "requirements.lock") == "3.11"


def test_pulled_images_are_pinned(services):
    for name, service in services.items():
        if "build" in service:
            continue
        image = interpolate(service["image"])
        if image == trainer_image(services):  # built by the trainer-image service
            continue
        tag = image.rpartition(":")[2] if ":" in image.rsplit("/", 1)[-1] else ""
        assert tag and tag != "latest", f"{name}: pin a tag for {image}"
    assert services["postgres"]["image"] == "postgres:16"
    assert re.fullmatch(r"fsouza/fake-gcs-server:\d+\.\d+\.\d+", services["gcs"]["image"])


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: the last matching pattern wins; a pattern matches a path or
    any folder above it."""
    ignored = False
    parts = path.split("/")
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if any(fnmatch.fnmatchcase("/".join(parts[:i]), pattern) for i in range(1, len(parts) + 1)):
            ignored = not negate
    return ignored


def test_airflow_build_context_sends_only_what_is_copied(services):
    assert services["airflow-apiserver"]["build"]["context"] == "."
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    text = AIRFLOW_DOCKERFILE.read_text().replace("\\\n", " ")
    sources = re.findall(r"^COPY\s+(?:--\S+\s+)*(\S+)\s+\S+\s*$", text, flags=re.MULTILINE)
    assert sources
    for source in sources:
        assert (REPO / source).exists(), source
        assert not _dockerignored(source, patterns), f"{source} is excluded by .dockerignore"
    for heavy in (".venv/airflow/bin/python", ".local/x", ".git/HEAD", "recommend_task/Dockerfile",
                  "dags/recommend_train.py"):
        assert _dockerignored(heavy, patterns), f"{heavy} would be sent to the Airflow build"


# --- the real validator, where it exists ---------------------------------------------------------

def _compose_cli() -> list[str] | None:
    """``docker compose`` (the plugin), else a standalone ``docker-compose``; no engine needed."""
    for cli in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(cli[0]) and subprocess.run([*cli, "version"], capture_output=True).returncode == 0:
            return cli
    return None


def test_docker_compose_config_validates():
    assert _compose_cli(), "neither docker compose nor docker-compose is installed (make test installs it)"
    result = subprocess.run([*_compose_cli(), "-f", str(COMPOSE_FILE), "config", "-q"],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
