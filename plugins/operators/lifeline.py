"""A trainer step never outlives the Airflow task that launched it, even when a worker dies.

Airflow runs each task in a process forked by a supervisor (the worker's process for that task).
If the supervisor dies (its worker OOM-killed, a pod evicted), Airflow's heartbeat handling
retries or fails the task instance, but nothing stops the task process, which keeps waiting on
its trainer: a local subprocess in its own session, or a sibling container. Both would go on
writing beside the retry. So, while a trainer step runs:

- :func:`task_dies_with_supervisor`: the task process gets SIGTERM when its supervisor dies (a
  Linux parent-death signal), so Airflow's own SIGTERM handler runs the operator's ``on_kill``:
  the local trainer's process group is killed, the container stopped;
- ``contract.LAUNCHER_PID_ENV``: the local trainer asks for SIGKILL when the task process dies
  (``recommend_task/trainer/step/lifeline.py``), whatever killed it.

``on_kill`` runs inside Airflow's SIGTERM handler, on the main thread, which the signal may have
interrupted mid-write holding the task log's writer lock (a plain lock in Airflow 3.3's structlog
writer): so the launchers' ``on_kill`` never logs and never blocks on what that thread must do.

The Vertex runtime needs neither: its waiting is deferred to the triggerer, and a retry adopts
the running job (operators/launchers/vertex.py). Off Linux there is no parent-death signal; nothing is
tied and the previous behaviour stands.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Iterator

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

log = logging.getLogger(__name__)


def _set_parent_death_signal(sig: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0


@contextlib.contextmanager
def task_dies_with_supervisor() -> Iterator[None]:
    """Within the block, this (task) process gets SIGTERM if its parent, the task's supervisor,
    dies. Restored afterwards: the signal is only wanted while a trainer runs."""
    supervisor = os.getppid()
    tied = _set_parent_death_signal(signal.SIGTERM)
    if not tied:
        log.warning("no parent-death signal on this platform: a trainer step may outlive a dead worker")
    elif os.getppid() != supervisor:  # it died before we asked: act as the signal would have
        os.kill(os.getpid(), signal.SIGTERM)
    try:
        yield
    finally:
        if tied:
            _set_parent_death_signal(0)
