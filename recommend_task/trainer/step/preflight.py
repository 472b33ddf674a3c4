"""Refuse, before the work starts, a run that cannot finish on the machine it runs on.

The trigger form bounds each parameter on its own (factors, iterations, lookback days); whether a
run fits depends on the data too: ``factors=1024, iterations=200`` is minutes on a small window
and hours at 100M events. A step that would run past its task's timeout or out of memory is
retried and billed for nothing, so create_cf_matrices and train estimate their needs from the
real counts and the per-unit costs measured by ``make bench-scale`` (docs/benchmarks.md, "Growth
on paper") and stop with a permanent error (exit 2) naming the estimate and the limit.

The costs are the lower measured figures, so an estimate errs towards letting a run go ahead:
a refusal means even the optimistic figure does not fit.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path

from trainer.contract import TIME_BUDGET_ENV  # how the launchers pass the task's timeout
from trainer.core.errors import TrainerError

# trainer.<module>: log filters keep working when a module moves between subpackages.
log = logging.getLogger("trainer.preflight")

# Measured at 100M events (docs/benchmarks.md, "Growth on paper"), 64 factors.
FIT_SECONDS_PER_NNZ_ITERATION = 0.45e-6  # per vCPU at 64 factors; implicit's CG solver is linear in factors
MEASURED_FACTORS = 64
# train's peak: the matrix, its transpose and the fit's working copies per nnz (44 B/nnz overall
# at 64 factors, less the factors and the interpreter counted below), the factors themselves.
TRAIN_BYTES_PER_NNZ = 36
FACTOR_BYTES = 4  # float32, per factor of each user and item
# create_cf_matrices' peak per event read: 5,697 MiB at 100M events (0.79 aggregated rows per event).
CREATE_CF_BYTES_PER_EVENT = 55
BASE_BYTES = 200 * 2**20  # the interpreter, numpy, scipy, implicit and the Google clients

MEMORY_ENV = "RECSYS_STEP_MEMORY_GIB"  # caps the memory a step plans for below the machine's
_UNLIMITED = 2**60  # cgroup v1 reports "no limit" as a huge number


@dataclasses.dataclass(frozen=True)
class Machine:
    """What a step can use where it runs: CPUs and memory."""

    vcpus: int
    memory_bytes: int

    @classmethod
    def detect(cls, environ: Mapping[str, str] | None = None) -> Machine:
        """The CPUs this process may run on (a cgroup CPU quota lowers it) and the memory of its
        container (the cgroup limit) or else of the machine; ``RECSYS_STEP_MEMORY_GIB`` plans for
        less, where the step shares its machine (the local runtime on a laptop)."""
        environ = os.environ if environ is None else environ
        vcpus = len(os.sched_getaffinity(0))
        quota = _read("/sys/fs/cgroup/cpu.max").split()
        if len(quota) == 2 and quota[0] != "max":
            vcpus = min(vcpus, max(1, math.ceil(int(quota[0]) / int(quota[1]))))
        memory = _mem_total()
        for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
            limit = _read(path)
            if limit.isdigit() and int(limit) < _UNLIMITED:
                memory = min(memory, int(limit))
        if environ.get(MEMORY_ENV):
            try:
                memory = int(float(environ[MEMORY_ENV]) * 2**30)
            except ValueError:
                raise TrainerError(
                    f"{MEMORY_ENV} must be a number of GiB, got {environ[MEMORY_ENV]!r}") from None
        return cls(vcpus=vcpus, memory_bytes=memory)


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A step's peak memory, and its compute time on one vCPU where this module can tell it."""

    peak_bytes: int
    cpu_seconds: float | None
    basis: str  # the counts it was estimated from, for the message

    def seconds(self, machine: Machine) -> float | None:
        return None if self.cpu_seconds is None else self.cpu_seconds / machine.vcpus


def train_estimate(*, nnz: int, users: int, items: int, factors: int, iterations: int) -> Estimate:
    """train_task's fit: time grows with nnz x iterations x factors, memory with nnz and factors."""
    cpu = nnz * iterations * FIT_SECONDS_PER_NNZ_ITERATION * factors / MEASURED_FACTORS
    peak = BASE_BYTES + nnz * TRAIN_BYTES_PER_NNZ + (users + items) * factors * FACTOR_BYTES
    return Estimate(peak, cpu, f"{nnz:,} nnz, {users:,} users, {items:,} items, "
                               f"{factors} factors, {iterations} iterations")


def create_cf_estimate(*, events: int) -> Estimate:
    """create_cf_matrices' read and build: memory grows with the window's events. Its time is
    BigQuery's aggregation, not this machine's, and is not estimated."""
    return Estimate(BASE_BYTES + events * CREATE_CF_BYTES_PER_EVENT, None, f"{events:,} events in the window")


def check(step: str, estimate: Estimate, machine: Machine, time_budget_s: float | None) -> None:
    """Raise a permanent :class:`TrainerError` when ``estimate`` does not fit ``machine`` or the
    step's ``time_budget_s`` (its task's timeout; None or 0: no limit); log it otherwise."""
    problems = []
    if estimate.peak_bytes > machine.memory_bytes:
        problems.append(f"needs about {_gb(estimate.peak_bytes)} of memory, more than this machine's "
                        f"{_gb(machine.memory_bytes)}")
    seconds = estimate.seconds(machine)
    if time_budget_s and seconds is not None and seconds > time_budget_s:
        problems.append(f"would take about {_duration(seconds)} on {machine.vcpus} vCPUs, more than "
                        f"its {_duration(time_budget_s)} timeout")
    if problems:
        raise TrainerError(
            f"{step} " + " and ".join(problems) + f" ({estimate.basis}; per-unit costs measured in "
            "docs/benchmarks.md): lower the parameters or the lookback, or give the step a larger "
            "machine (RECSYS_VERTEX_MACHINE_TYPES) and timeout")
    timing = "" if seconds is None else f" and about {_duration(seconds)} on {machine.vcpus} vCPUs" + (
        f" of its {_duration(time_budget_s)} timeout" if time_budget_s else "")
    log.info("pre-flight: %s needs about %s of %s memory%s (%s)", step, _gb(estimate.peak_bytes),
             _gb(machine.memory_bytes), timing, estimate.basis)


def add_time_budget(parser) -> None:
    parser.add_argument("--time-budget-s", type=float, default=os.environ.get(TIME_BUDGET_ENV, "0"),
                        help=f"seconds the step may take (default ${TIME_BUDGET_ENV}, which the DAGs set "
                             "to the task's timeout; 0 = no limit): a run estimated to take longer is "
                             "refused before it starts")


def _gb(count: int) -> str:
    return f"{count / 1e9:.1f} GB"


def _duration(seconds: float) -> str:
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 120:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.3g} s"


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _mem_total() -> int:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return _UNLIMITED
