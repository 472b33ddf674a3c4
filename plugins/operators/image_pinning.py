"""Choose the trainer image of a run, refuse one from outside the registry allowlist, and pin
it to an immutable reference that every step of the run uses (see :mod:`operators.image_references`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

# The common-compat provider resolves names that moved between Airflow 3.1 and 3.3.
from airflow.providers.common.compat.sdk import AirflowFailException
from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowException

from operators.config import RecsysConfig
from operators.image_references import DIGEST, ImageRef, is_allowed, trainer_fingerprint

# What `docker pull` accepts, so the registry answers with the digest docker would pull.
MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
LOOPBACK = ("localhost", "127.0.0.1", "[::1]")  # plain HTTP, as Docker allows for these


class ImageNotAllowedError(AirflowFailException):
    """Not retried: asking again will not make the image allowed."""


class ImageNotFoundError(AirflowFailException):
    """Not retried: the reference names no image (a typo, a tag never pushed or built)."""


def check_image(image: str, allowlist: Sequence[str]) -> str:
    """Return ``image`` if the allowlist allows it (see :func:`is_allowed`), else raise naming both."""
    image = image or ""
    if not image.strip():
        raise ImageNotAllowedError("no trainer image: set the Variable or pass the image_uri param")
    # Not stripped: a reference with whitespace around it is not the reference that was allowed.
    if not is_allowed(image, allowlist):
        raise ImageNotAllowedError(
            f"trainer image {image!r} is not allowed; allowed prefixes: {', '.join(allowlist)} "
            "(a digest reference REPOSITORY@sha256:... is allowed when REPOSITORY: is)"
        )
    return image


def check_pinned(image: str, allowlist: Sequence[str]) -> str:
    """What a launcher runs: ``image`` if it is allowed and pinned by digest, else raise naming it.

    Launchers take the image from ``resolve_image``'s XCom, which a user who may edit XCom can
    replace before clearing a step: checked again here, before anything starts."""
    check_image(image, allowlist)
    if ImageRef.parse(image).digest is None:
        raise ImageNotAllowedError(
            f"trainer image {image!r} is not pinned by digest (REPOSITORY@sha256:...): steps run only "
            "what resolve_image pinned; clear the whole run, resolve_image included")
    return image


def registry_digest(image: str, gcp_conn_id: str, allowlist: Sequence[str]) -> str:
    """``REPOSITORY@sha256:...`` for ``image`` from its registry's Docker API (Artifact Registry
    accepts the Google connection's OAuth token), the digest `docker pull` would fetch.

    The token goes only to a registry the allowlist names: ``image`` is checked first, so its
    host is an allowed repository's host, and redirects are not followed."""
    import requests
    from airflow.providers.google.common.hooks.base_google import GoogleBaseHook
    from google.auth.transport.requests import AuthorizedSession

    check_image(image, allowlist)
    ref = ImageRef.parse(image)
    host = ref.registry
    scheme = "http" if host.rsplit(":", 1)[0] in LOOPBACK else "https"
    url = f"{scheme}://{host}/v2/{ref.path}/manifests/{ref.digest or ref.tag or 'latest'}"
    session = AuthorizedSession(GoogleBaseHook(gcp_conn_id=gcp_conn_id).get_credentials())
    try:
        response = session.head(url, headers={"Accept": ", ".join(MANIFEST_TYPES)}, timeout=30,
                                allow_redirects=False)
    except requests.RequestException as exc:
        raise AirflowException(
            f"registry {host} unreachable resolving {image}: {type(exc).__name__}") from None
    if response.status_code == 404:
        raise ImageNotFoundError(f"trainer image {image} not found in registry {host} (HTTP 404)")
    if response.status_code in (401, 403):
        raise ImageNotFoundError(
            f"registry {host} refused to show {image} (HTTP {response.status_code}): the connection "
            f"{gcp_conn_id!r} needs Artifact Registry Reader on the repository")
    if response.status_code >= 400:  # 5xx, 429: the registry, not the reference
        raise AirflowException(f"registry {host} answered HTTP {response.status_code} resolving {image}")
    digest = response.headers.get("Docker-Content-Digest", "")
    if not DIGEST.fullmatch(digest):
        raise ImageNotFoundError(f"registry {host} gave no sha256 digest for {image}")
    if ref.digest and digest != ref.digest:
        raise ImageNotFoundError(f"registry {host} serves {digest} for {image}")
    return ref.pinned(digest)


def _docker_client(docker_url: str):
    from airflow.providers.docker.hooks.docker import DockerHook

    return DockerHook(docker_conn_id=None, base_url=docker_url).api_client


def pin_tag(repository: str, image_id: str) -> tuple[str, str]:
    """The tag ``resolve_image`` gives the image it pinned: ``(repository, "pinned-<id hex>")``."""
    return repository, "pinned-" + image_id.removeprefix("sha256:")


def docker_image_id(image: str, docker_url: str) -> str:
    """The Docker engine's ID (``sha256:...``) of ``image``, which must be present there.

    The image is also tagged ``REPOSITORY:pinned-<id>`` (:func:`pin_tag`): the launchers accept
    an image ID only while the engine names it with an allowed reference, and that tag keeps
    naming it when the run's tag moves to a newer build mid-run."""
    from docker.errors import ImageNotFound

    client = _docker_client(docker_url)
    try:
        image_id = client.inspect_image(image)["Id"]
    except ImageNotFound:
        raise ImageNotFoundError(f"trainer image {image} is not in the Docker engine at {docker_url} "
                                 "(build it: make image, or docker compose build)") from None
    if not DIGEST.fullmatch(image_id):
        raise ImageNotFoundError(f"the Docker engine gave no sha256 image ID for {image}")
    repository, tag = pin_tag(ImageRef.parse(image).repository, image_id)
    client.tag(image_id, repository, tag)
    return image_id


def check_docker_image(image: str, allowlist: Sequence[str], docker_url: str) -> str:
    """What the docker launcher runs: an allowed reference pinned by digest (:func:`check_pinned`),
    or an image ID (``sha256:...``, what ``resolve_image`` pins to) that the engine names with
    an allowed tag or registry digest; else raise naming it."""
    if not DIGEST.fullmatch(image or ""):
        return check_pinned(image, allowlist)
    from docker.errors import ImageNotFound

    try:
        found = _docker_client(docker_url).inspect_image(image)
    except ImageNotFound:
        raise ImageNotFoundError(
            f"trainer image {image} is not in the Docker engine at {docker_url}") from None
    names = [*(found.get("RepoTags") or []), *(found.get("RepoDigests") or [])]
    # The full ID, not a prefix of another image's: the engine resolves short IDs too.
    if found.get("Id") != image or not any(is_allowed(name, allowlist) for name in names):
        raise ImageNotAllowedError(
            f"trainer image {image!r} is not allowed: the Docker engine names it "
            f"{', '.join(names) or 'nothing (untagged)'}, none of them allowed by {', '.join(allowlist)}")
    return image


def local_fingerprint(image: str, trainer_source: Path) -> str:
    """``<image>@sha256:<fingerprint>`` of the trainer sources the local runtime runs."""
    try:
        fingerprint = trainer_fingerprint(trainer_source)
    except FileNotFoundError as exc:
        raise ImageNotFoundError(str(exc)) from None
    ref = ImageRef.parse(image)
    if ref.digest and ref.digest != fingerprint:
        raise ImageNotFoundError(f"{image} is pinned to other trainer sources than {trainer_source} "
                                 f"({fingerprint})")
    name = ref.repository + (f":{ref.tag}" if ref.tag else "")
    return f"{name}@{fingerprint}"


class ResolveTrainerImageOperator(BaseOperator):
    """Render the run's image (param ``image_uri`` or the environment's Variable), check it
    against the allowlist, pin it to an immutable reference for the runtime, and publish that
    as XCom for the trainer tasks (``requested`` holds what was asked for).

    Its own operator because the check and the pinning must happen once, before any step is
    submitted, in every runtime, and show up as a task of its own in the graph.
    """

    template_fields: Sequence[str] = ("image",)
    ui_color = "#e8f0fe"

    def __init__(self, *, image: str, allowlist: Sequence[str], runtime: str, gcp_conn_id: str,
                 docker_url: str, trainer_source: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.image = image
        self.allowlist = tuple(allowlist)
        self.runtime = runtime
        self.gcp_conn_id = gcp_conn_id
        self.docker_url = docker_url
        self.trainer_source = trainer_source

    def pin(self, image: str) -> str:
        if self.runtime == "vertex":
            return registry_digest(image, self.gcp_conn_id, self.allowlist)
        if self.runtime == "docker":
            return docker_image_id(image, self.docker_url)
        return local_fingerprint(image, Path(self.trainer_source))

    def execute(self, context: Context) -> str:
        image = check_image(self.image, self.allowlist)  # also refuses what is no image reference
        pinned = self.pin(image)
        self.log.info("trainer image for this run: %s, pinned to %s (%s runtime)", image, pinned,
                      self.runtime)
        context["ti"].xcom_push(key="requested", value=image)
        return pinned


def resolve_image(config: RecsysConfig) -> ResolveTrainerImageOperator:
    """The ``resolve_image`` task: param ``image_uri``, else the environment's Variable (read at
    run time through templating, never at parse time)."""
    return ResolveTrainerImageOperator(
        task_id="resolve_image",
        image=f"{{{{ params.image_uri or var.value.get('{config.image_variable}', '') }}}}",
        allowlist=config.image_allowlist,
        runtime=config.runtime,
        gcp_conn_id=config.gcp_conn_id,
        docker_url=config.docker_url,
        trainer_source=config.trainer_source,
        execution_timeout=timedelta(minutes=10),
        # Refusals raise AirflowFailException (no retry); an unreachable registry is retried.
    )
