"""The process tree Airflow runs a task in, for tests that kill parts of it.

Airflow's supervisor (the worker's process for one task) forks the task process, owns the pipe its
logs go through, and heartbeats for it. The task process installs a SIGTERM handler that calls
the operator's ``on_kill``, and its logging raises once the supervisor is gone (the log channel
is a socket to it): see ``airflow/sdk/execution_time/supervisor.py`` and ``task_runner.py``,
3.1 and 3.3 alike. These scripts reproduce exactly that, so a test can SIGKILL the supervisor or
the task process; the same faults with a real scheduler and worker are in
tests/local/test_browser.py.
"""

from __future__ import annotations

import textwrap

# `python -c SUPERVISOR.format(task=TASK_SCRIPT)`: fork the task, forward its output, wait.
SUPERVISOR = textwrap.dedent("""
    import os, sys, time
    read, write = os.pipe()
    if os.fork() == 0:
        os.dup2(write, 1)
        os.dup2(write, 2)
        os.execv(sys.executable, [sys.executable, "-c", {task!r}])
    os.close(write)
    with os.fdopen(read, "rb", buffering=0) as logs:  # the task's log channel, owned here
        for line in iter(logs.readline, b""):
            sys.stdout.buffer.write(line)
            sys.stdout.flush()
    time.sleep(3600)
""")

# The start of a task script: logging that raises once its reader is gone, and Airflow's SIGTERM
# handler. The script then builds `op` and calls `run(op)`.
TASK_PRELUDE = textwrap.dedent("""
    import logging, signal, sys

    class _Channel(logging.StreamHandler):
        def handleError(self, record):
            raise  # as the task's log socket does once its supervisor is gone

    logging.basicConfig(level=logging.INFO, handlers=[_Channel(sys.stdout)], force=True)

    def run(op):
        signal.signal(signal.SIGTERM, lambda *_: op.on_kill())
        op.execute({{}})
""")
