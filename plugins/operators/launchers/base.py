"""What every launcher does, and the one way each tells its operator how a step ended."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from airflow.triggers.base import BaseTrigger

    from operators.trainer_step import TrainerStepOperator


class Deferral(NamedTuple):
    """A launcher that waits in the triggerer returns this; the operator defers to ``trigger``
    and resumes in its ``execute_complete``, which hands the event to :meth:`Launcher.resume`."""

    trigger: BaseTrigger


class Launcher:
    """Runs one try of ``python -m trainer.<step> ARGS`` in one runtime.

    Subclasses implement :meth:`check_image` (refuse, before anything starts, an image that is
    not the run's pinned one), :meth:`launch` (start the step and see it to its end, applying the
    exit-code rule of :mod:`operators.trainer_exit`, or return a :class:`Deferral`) and
    :meth:`kill` (stop the step; called from Airflow's SIGTERM handler: it must neither log nor
    block). A deferring launcher also implements :meth:`resume`."""

    runtime: str = ""

    def __init__(self, operator: TrainerStepOperator) -> None:
        self.operator = operator
        self.log = operator.log

    def check_image(self, image: str) -> str:
        """``image`` if this runtime may run it, else raise naming it."""
        raise NotImplementedError

    def launch(self, context: Any) -> Any:
        """Run the step (its outcome raised as the trainer's exit code asks), or defer."""
        raise NotImplementedError

    def resume(self, context: Any, event: dict[str, Any]) -> Any:
        """After a deferral: the step's outcome from the trigger's event."""
        raise NotImplementedError(f"the {self.runtime} launcher does not defer")

    def kill(self) -> None:
        """Stop the step this launcher started, if it still runs."""
