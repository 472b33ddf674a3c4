"""Choose the trainer image of a run and refuse one from outside the registry allowlist."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

# The common-compat provider resolves names that moved between Airflow 3.1 and 3.3.
from airflow.providers.common.compat.sdk import AirflowFailException
from airflow.sdk import BaseOperator, Context

from operators.config import RecsysConfig


class ImageNotAllowedError(AirflowFailException):
    """Not retried: asking again will not make the image allowed."""


def check_image(image: str, allowlist: Sequence[str]) -> str:
    """Return ``image`` if it starts with an allowed prefix, else raise naming both."""
    image = (image or "").strip()
    if not image:
        raise ImageNotAllowedError("no trainer image: set the Variable or pass the image_uri param")
    if not any(image.startswith(prefix) for prefix in allowlist):
        raise ImageNotAllowedError(
            f"trainer image {image!r} is not allowed; allowed prefixes: {', '.join(allowlist)}"
        )
    return image


class ResolveTrainerImageOperator(BaseOperator):
    """Render the run's image (param ``image_uri`` or the environment's Variable), check it
    against the allowlist and publish it as XCom for the trainer tasks.

    Its own operator because the check must run before any step is submitted, in every runtime,
    and show up as a task of its own in the graph.
    """

    template_fields: Sequence[str] = ("image",)
    ui_color = "#e8f0fe"

    def __init__(self, *, image: str, allowlist: Sequence[str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.image = image
        self.allowlist = tuple(allowlist)

    def execute(self, context: Context) -> str:
        image = check_image(self.image, self.allowlist)
        self.log.info("trainer image for this run: %s", image)
        return image


def resolve_image(config: RecsysConfig) -> ResolveTrainerImageOperator:
    """The ``resolve_image`` task: param ``image_uri``, else the environment's Variable (read at
    run time through templating, never at parse time)."""
    return ResolveTrainerImageOperator(
        task_id="resolve_image",
        image=f"{{{{ params.image_uri or var.value.get('{config.image_variable}', '') }}}}",
        allowlist=config.image_allowlist,
        retries=0,  # a refused image stays refused
        execution_timeout=timedelta(minutes=10),
    )
