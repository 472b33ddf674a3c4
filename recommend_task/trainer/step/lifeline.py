"""A step launched as a plain subprocess dies with the process that launched it.

The local runtime starts each step in its own session, so that killing the task kills the step's
whole process group. The price: when the Airflow task process itself dies (its worker killed, an
OOM kill), nothing reaches the step, which would go on writing beside the task's retry. The
launcher names itself in the variable :data:`trainer.contract.LAUNCHER_PID_ENV`; the step then
asks Linux for a parent-death signal (SIGKILL: every step is safe to kill at any point, which the
tests show step by step). The signal follows the step's parent: an interpreter wrapper between
launcher and step should ``exec`` the interpreter, or the step is tied to the wrapper rather than
to the launcher.

Containers need none of this (the container is the process tree), so without the variable, or
off Linux, it does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

from trainer.contract import LAUNCHER_PID_ENV

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

log = logging.getLogger("trainer")


class LauncherGone(SystemExit):
    """The launcher died before the step could tie itself to it."""


def die_with_launcher() -> bool:
    """Tie this process to its launcher; True if tied. Exits at once if the launcher is already
    gone (this process was re-parented before it could ask)."""
    launcher = os.environ.get(LAUNCHER_PID_ENV, "").strip()
    if not launcher or not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        log.warning("cannot ask for a parent-death signal (errno %d): this step may outlive its task",
                    ctypes.get_errno())
        return False
    # Checked after asking: a launcher that died before, and only that, is seen here. An
    # ancestor, not necessarily the parent: an interpreter wrapper may sit between the two.
    if int(launcher) not in _ancestors(os.getpid()):
        raise LauncherGone(f"launcher {launcher} is gone (parent now {os.getppid()}): not starting")
    return True


def _ancestors(pid: int, limit: int = 32) -> Iterator[int]:
    """The parent, grandparent, ... of ``pid`` below init (read from /proc)."""
    for _ in range(limit):
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return
        if pid <= 1:
            return
        yield pid
