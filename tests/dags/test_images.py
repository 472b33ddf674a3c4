"""One immutable image per run: the allowlist accepts the pinned reference of an allowed image
and nothing else, and each runtime pins the run's tag once (FAKES as in fake_launchers.py:
Artifact Registry's Docker API on loopback, and the Docker engine API)."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest
from conftest import REPO, local_step
from support.fake_launchers import FakeDockerEngine, LoopbackRegistry

REPO_PREFIX = "europe-west1-docker.pkg.dev/p/recsys/trainer:"
ALLOWLIST = (REPO_PREFIX, "recsys-trainer:")
DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize("ref, allowed", [
    (REPO_PREFIX + "prod", True),
    ("europe-west1-docker.pkg.dev/p/recsys/trainer@" + DIGEST, True),  # the pinned reference
    (REPO_PREFIX + "prod@" + DIGEST, True),
    ("recsys-trainer@" + DIGEST, True),
    ("recsys-trainer:dev@" + DIGEST, True),
    ("europe-west1-docker.pkg.dev/p/recsys/trainer@sha256:abc", False),  # not a digest
    (REPO_PREFIX + "prod@sha256:" + "AB" * 32, False),
    ("europe-west1-docker.pkg.dev/p/recsys/other@" + DIGEST, False),
    ("europe-west1-docker.pkg.dev/p/recsys/trainer-evil@" + DIGEST, False),
    ("docker.io/someone/trainer@" + DIGEST, False),
    (DIGEST, False),  # a bare image ID names no repository
    ("docker.io/someone/trainer:latest", False),
    # Look-alikes: another project, another registry with the same path, path tricks, whitespace,
    # shell characters. Only a reference in the Docker grammar can pass.
    ("europe-west1-docker.pkg.dev/project-evil/recsys/trainer:prod", False),
    ("evil.example.com/p/recsys/trainer:prod", False),
    ("europe-west1-docker.pkg.dev.evil.example.com/p/recsys/trainer:prod", False),
    ("recsys-trainer:dev/../x", False),
    (REPO_PREFIX + "../../x", False),
    ("recsys-trainer:dev ", False),
    (" recsys-trainer:dev", False),
    ("recsys-trainer:dev\n", False),
    ("recsys-trainer:dev\tx", False),
    (REPO_PREFIX + "prod;rm -rf /", False),
    (REPO_PREFIX + "$(id)", False),
    (REPO_PREFIX + "`id`", False),
    ("recsys-trainer:dev@" + DIGEST + "\n", False),
])
def test_the_allowlist_accepts_pinned_references_of_allowed_images_only(ref, allowed):
    from operators.image_references import is_allowed

    assert is_allowed(ref, ALLOWLIST) is allowed


def test_registry_pinning_asks_for_what_docker_pulls_and_refuses_unknown_tags(monkeypatch):
    from operators.image_pinning import MANIFEST_TYPES, ImageNotFoundError, registry_digest

    monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", json.dumps(
        {"conn_type": "google_cloud_platform", "extra": {"is_anonymous": True}}))
    registry = LoopbackRegistry({"p/recsys/trainer:prod": DIGEST})
    try:
        image = f"{registry.host}/p/recsys/trainer"
        allowed = (f"{image}:",)
        assert registry_digest(f"{image}:prod", "google_cloud_default", allowed) == f"{image}@{DIGEST}"
        path, accept = registry.requests[-1]
        assert path == "/v2/p/recsys/trainer/manifests/prod"
        assert [a.strip() for a in accept.split(",")] == list(MANIFEST_TYPES)
        assert registry_digest(f"{image}@{DIGEST}", "google_cloud_default", allowed) == f"{image}@{DIGEST}"
        with pytest.raises(ImageNotFoundError, match=r"trainer:gone not found in registry .* \(HTTP 404\)"):
            registry_digest(f"{image}:gone", "google_cloud_default", allowed)
    finally:
        registry.close()


def test_docker_pinning_is_the_engines_image_id(monkeypatch):
    from operators.image_pinning import ImageNotFoundError, docker_image_id

    engine = FakeDockerEngine({"recsys-trainer:dev": FakeDockerEngine.image_id("v1")}).install(monkeypatch)
    assert docker_image_id("recsys-trainer:dev", "unix://x") == FakeDockerEngine.image_id("v1")
    engine.images_by_ref["recsys-trainer:dev"] = FakeDockerEngine.image_id("v2")  # rebuilt mid-run
    assert docker_image_id("recsys-trainer:dev", "unix://x") == FakeDockerEngine.image_id("v2")
    with pytest.raises(ImageNotFoundError, match="recsys-trainer:gone is not in the Docker engine at unix://x"):
        docker_image_id("recsys-trainer:gone", "unix://x")


def _trainer_copy(tmp_path):
    source = tmp_path / "recommend_task"
    shutil.copytree(REPO / "recommend_task" / "trainer", source / "trainer",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("requirements.lock", "pyproject.toml"):
        shutil.copy(REPO / "recommend_task" / name, source / name)
    return source


def test_a_local_step_refuses_to_run_trainer_sources_changed_since_the_run_was_pinned(tmp_path):
    from operators.image_pinning import local_fingerprint
    from operators.trainer_exit import TrainerStepFailed

    source = _trainer_copy(tmp_path)
    pinned = local_fingerprint("recsys-trainer:dev", source)
    assert pinned.startswith("recsys-trainer:dev@sha256:")
    assert local_fingerprint(pinned, source) == pinned  # a pinned reference is checked, not re-pinned
    (source / "trainer" / "train_task.py").write_text("# edited during the run\n", encoding="utf-8")
    op = local_step("train_task", ["--help"], trainer_source=source, image=pinned)
    with pytest.raises(TrainerStepFailed, match=r"trainer sources changed since resolve_image pinned"):
        op.execute({})
    assert local_fingerprint("recsys-trainer:dev", source) != pinned


@pytest.mark.parametrize("runtime", ["vertex", "docker", "local"])
@pytest.mark.parametrize("image", ["europe-west1-docker.pkg.dev/project-evil/recsys/trainer:prod",
                                   "recsys-trainer:dev/../x", "recsys-trainer:dev\n"])
def test_a_look_alike_image_is_refused_before_anything_is_pinned_or_submitted(runtime, image, monkeypatch):
    """resolve_image, the first task of every DAG, refuses it in every runtime before it asks a
    registry or an engine anything (the trainer tasks only ever run what it returned)."""
    from operators.image_pinning import ImageNotAllowedError, ResolveTrainerImageOperator

    op = ResolveTrainerImageOperator(task_id="resolve_image", image=image, allowlist=ALLOWLIST,
                                     runtime=runtime, gcp_conn_id="google_cloud_default",
                                     docker_url="unix://x", trainer_source=str(REPO / "recommend_task"))
    pinned = []
    monkeypatch.setattr(op, "pin", lambda ref: pinned.append(ref))
    with pytest.raises(ImageNotAllowedError, match="is not allowed"):
        op.execute({"ti": None})
    assert pinned == []


@pytest.mark.parametrize("entry", ["europe-west1-docker.pkg.dev/p/recsys/trainer", "recsys-trainer"])
def test_an_allowlist_entry_that_would_allow_look_alike_names_is_a_configuration_error(entry, monkeypatch):
    from operators import config

    monkeypatch.setenv("RECSYS_IMAGE_ALLOWLIST", entry)
    with pytest.raises(config.ConfigError, match="must end with"):
        config.load()


@pytest.mark.parametrize("ref", [
    "recsys-trainer:5000/evil/payload:v1",  # the compose file's default entry as a registry host
    "recsys-trainer:5000/evil/payload@" + DIGEST,
    "recsys-trainer:5000/recsys-trainer:dev",
    "recsys-trainer:443/recsys-trainer@" + DIGEST,
])
def test_a_name_entry_never_allows_a_registry_host_of_that_name(ref):
    """``recsys-trainer:`` names one repository; ``recsys-trainer:5000/…`` is another registry."""
    from operators.image_references import is_allowed

    assert is_allowed(ref, ALLOWLIST) is False
    assert is_allowed("recsys-trainer:dev", ALLOWLIST) is True  # the entry still allows its own tags


def test_no_registry_outside_the_allowlist_is_sent_the_google_token(monkeypatch):
    """resolve_image on Vertex asks the image's registry for its digest with the connection's
    OAuth token. A reference naming a host the allowlist does not (here through a ``name:``
    entry read as a host prefix) is refused naming it, and that host never sees a request;
    ``registry_digest`` itself refuses one before sending anything. The token is a stand-in
    (no Google sign-in here); the registry is the loopback fake of fake_launchers.py."""
    from airflow.providers.google.common.hooks.base_google import GoogleBaseHook
    from google.oauth2.credentials import Credentials

    from operators.image_pinning import ImageNotAllowedError, ResolveTrainerImageOperator, registry_digest

    token = "ya29.not-a-real-token-5ec7e7"
    monkeypatch.setattr(GoogleBaseHook, "get_credentials", lambda hook: Credentials(token=token))
    monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT",
                       json.dumps({"conn_type": "google_cloud_platform"}))
    registry = LoopbackRegistry({"evil/payload:v1": DIGEST, "p/recsys/trainer:prod": DIGEST})
    port = registry.host.rpartition(":")[2]
    allowed_repo = f"{registry.host}/p/recsys/trainer"
    hostile = f"localhost:{port}/evil/payload:v1"
    try:
        op = ResolveTrainerImageOperator(
            task_id="resolve_image", image=hostile, allowlist=("localhost:", f"{allowed_repo}:"),
            runtime="vertex", gcp_conn_id="google_cloud_default", docker_url="unix://x",
            trainer_source=str(REPO / "recommend_task"))
        with pytest.raises(ImageNotAllowedError, match=f"trainer image '{hostile}' is not allowed"):
            op.execute({"ti": SimpleNamespace(xcom_push=lambda **_: None)})
        with pytest.raises(ImageNotAllowedError, match="evil/payload:v1' is not allowed"):
            registry_digest(f"{registry.host}/evil/payload:v1", "google_cloud_default",
                            allowlist=(f"{allowed_repo}:",))
        assert registry.requests == [] and registry.authorizations == []
        # The allowed repository's registry is asked, with the token.
        pinned = registry_digest(f"{allowed_repo}:prod", "google_cloud_default",
                                 allowlist=(f"{allowed_repo}:",))
        assert pinned == f"{allowed_repo}@{DIGEST}"
        assert registry.authorizations == [f"Bearer {token}"]
    finally:
        registry.close()


@pytest.mark.parametrize("image, why", [
    # An image ID: the engine's only names for it are outside the allowlist.
    (FakeDockerEngine.image_id("evil"), "the Docker engine names it evil/payload:v1, none of them allowed"),
    ("evil/payload:v1", "is not allowed"),
    ("recsys-trainer:dev", "is not pinned"),  # allowed, but a tag can be moved mid-run
])
def test_a_docker_step_refuses_an_image_edited_into_xcom_before_creating_a_container(image, why, monkeypatch):
    """Every step runs what resolve_image's XCom holds: a user who may edit XCom (and clear a
    task) can put any reference there. The launcher checks it again, before any container.
    FAKE: the Docker engine API (fake_launchers.py); tests/docker/ has the same with a real engine."""
    import re

    from conftest import load_dagbag, shard_task

    from operators.image_pinning import ImageNotAllowedError

    monkeypatch.setenv("RECSYS_RUNTIME", "docker")
    engine = FakeDockerEngine({"recsys-trainer:dev": FakeDockerEngine.image_id("v1"),
                               "evil/payload:v1": FakeDockerEngine.image_id("evil")}).install(monkeypatch)
    task = shard_task(load_dagbag().dags["recommend_predict"].get_task("predict"))
    task.image = task.render_template(task.image, {"ti": SimpleNamespace(xcom_pull=lambda task_ids: image)})
    assert task.image == image
    with pytest.raises(ImageNotAllowedError, match=f"^trainer image '{re.escape(image)}' .*{why}"):
        task.execute({})
    assert engine.created == [] and engine.pulled == []
