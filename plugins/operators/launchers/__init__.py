"""One launcher per runtime (``RECSYS_RUNTIME``), chosen from one table.

:class:`operators.trainer_step.TrainerStepOperator` is the only operator of a trainer step; it
asks :func:`launcher_for` for its runtime's launcher when it executes. Each launcher module calls
the runtime's stock hook directly (Vertex AI's ``CustomJobHook``, the Docker ``DockerHook``'s API
client, the standard provider's ``SubprocessHook``) and is imported here, lazily, at this one
site: a DAG file's parse imports none of them (the Vertex provider alone costs seconds; measured:
docs/benchmarks.md).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from operators.launchers.base import Launcher
    from operators.trainer_step import TrainerStepOperator

# runtime -> "module:class" of its launcher
LAUNCHERS = {
    "vertex": "operators.launchers.vertex:VertexLauncher",
    "docker": "operators.launchers.docker:DockerLauncher",
    "local": "operators.launchers.local:LocalLauncher",
}


def launcher_class(runtime: str) -> type[Launcher]:
    """The launcher class of ``runtime`` (imported now)."""
    try:
        module, _, name = LAUNCHERS[runtime].partition(":")
    except KeyError:
        raise ValueError(f"no launcher for runtime {runtime!r}; one of {', '.join(LAUNCHERS)}") from None
    return getattr(importlib.import_module(module), name)


def launcher_for(operator: TrainerStepOperator) -> Launcher:
    """The launcher that runs ``operator``'s step in its runtime."""
    return launcher_class(operator.runtime)(operator)
