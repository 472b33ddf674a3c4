"""What every launcher promises, as one test class each launcher's tests inherit (the way
``implicit``'s ``RecommenderBase`` tests are inherited by every model's): exit 2 fails the task at
once, 75 and crashes fail the try for a retry, a kill stops the step, and a pinned image stays
pinned (an unpinned one is refused before anything starts; the step runs exactly the pinned one).

The step is a stand-in trainer (``python -m trainer.exit_with``) run through the launcher's real
code path; it exits as asked, prints its ``ERROR:`` line and leaves its status record as the
trainer does (with the contract module itself), so the launchers that read the record (Vertex)
are held to the same rule. A subclass says how its runtime is set up and how a try is run.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import REPO

RUN_ID = "manual__2026-11-30T05:00:00+00:00"
RUN_DATE = "2026-11-29"
STOPPED_WITHIN_S = 30

STAND_IN = '''\
"""Stand-in step: exits with --code (-1: runs until killed), as the trainer would."""
import json, os, sys, time
from pathlib import Path

from trainer import contract

args = sys.argv[1:]
code = int(args[args.index("--code") + 1])
artifacts, run_date = args[args.index("--artifacts-uri") + 1], args[args.index("--run-date") + 1]
Path(artifacts).mkdir(parents=True, exist_ok=True)
Path(artifacts, "started.json").write_text(json.dumps(
    {"pid": os.getpid(), "image": os.environ.get(contract.IMAGE_ENV)}))
print("step exit_with starting", flush=True)
if code < 0:
    time.sleep(600)
error = f"asked for exit {code}" if code else ""
if code:
    print(f"{contract.ERROR_PREFIX} exit_with: {error}", file=sys.stderr, flush=True)
record = dict.fromkeys(contract.RECORD_FIELDS) | {
    "step": "exit_with", "exit_code": code, "outcome": contract.outcome(code), "error": error,
    "run_date": run_date, "airflow_run_id": os.environ[contract.AIRFLOW_RUN_ID_ENV],
    "try": int(os.environ[contract.TRY_NUMBER_ENV])}
path = Path(contract.status_record_uri(artifacts, run_date, os.environ[contract.STATUS_NAME_ENV]))
path.parent.mkdir(parents=True, exist_ok=True)
path.write_text(json.dumps(record))
sys.exit(code)
'''


def stand_in_trainer(root: Path) -> Path:
    """A trainer source folder holding only the stand-in step and the contract."""
    (root / "trainer").mkdir(parents=True)
    (root / "trainer" / "__init__.py").write_text("")
    shutil.copy(REPO / "recommend_task" / "trainer" / "contract.py", root / "trainer" / "contract.py")
    (root / "trainer" / "exit_with.py").write_text(STAND_IN)
    for name in ("requirements.lock", "pyproject.toml"):  # what the local fingerprint covers
        (root / name).write_text(f"# stand-in {name}\n")
    return root


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


class LauncherContract:
    """Inherit, and provide ``runtime``, the ``setup`` fixture's ``self.source`` use,
    :meth:`pinned_image`, :meth:`unpinned_image`, :meth:`launch_settings` and, for a launcher
    that defers, :meth:`finish` and :meth:`stop_deferred`."""

    runtime: str = ""
    allowlist = ("recsys-trainer:",)

    @pytest.fixture(autouse=True)
    def _stand_in(self, tmp_path, monkeypatch):
        self.source = stand_in_trainer(tmp_path / "source")
        self.artifacts = tmp_path / "artifacts"
        self.monkeypatch = monkeypatch
        self.install()

    # --- what a launcher's tests provide ------------------------------------------------------

    def install(self) -> None:
        """Set up the runtime's stand-ins (fake APIs) for this test."""

    def pinned_image(self) -> str:
        raise NotImplementedError

    def unpinned_image(self) -> str:
        raise NotImplementedError

    def launch_settings(self) -> dict[str, Any]:
        raise NotImplementedError

    def launched(self) -> list[str]:
        """The images of what the launcher started (containers, jobs); [] where none is seen."""
        return []

    def finish(self, op, context, deferred) -> Any:
        """A deferring launcher: wait for its trigger's event, resume the operator with it."""
        raise AssertionError(f"the {self.runtime} launcher deferred")

    def stop_deferred(self, deferred) -> None:
        """A deferring launcher: what stops its step while the task is deferred."""
        raise AssertionError(f"the {self.runtime} launcher deferred")

    # --- the harness --------------------------------------------------------------------------

    def operator(self, code: int, image: str | None = None):
        from operators import contract
        from operators.trainer_step import TrainerStepOperator

        image = image or self.pinned_image()
        return TrainerStepOperator(
            task_id="exit_with", step="exit_with", runtime=self.runtime, image=image,
            arguments=["--code", str(code), "--artifacts-uri", str(self.artifacts), "--run-date", RUN_DATE],
            environment={contract.STATUS_NAME_ENV: "contract.exit_with", contract.AIRFLOW_RUN_ID_ENV: RUN_ID,
                         contract.TRY_NUMBER_ENV: "1", contract.IMAGE_ENV: image},
            run_date=RUN_DATE, artifacts_uri=str(self.artifacts), allowlist=self.allowlist,
            launch=self.launch_settings())

    def context(self) -> dict[str, Any]:
        ti = SimpleNamespace(dag_id="contract", task_id="exit_with", run_id=RUN_ID, try_number=1,
                             map_index=-1, xcom_push=lambda key, value: None)
        return {"ti": ti, "run_id": RUN_ID}

    def run(self, op) -> Any:
        from airflow.providers.common.compat.sdk import TaskDeferred

        context = self.context()
        try:
            return op.execute(context)
        except TaskDeferred as deferred:
            return self.finish(op, context, deferred)

    def started(self) -> dict:
        path = self.artifacts / "started.json"
        deadline = time.monotonic() + 120
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return json.loads(path.read_text())

    # --- the contract -------------------------------------------------------------------------

    def test_success_returns(self):
        self.run(self.operator(0))
        assert self.started()["image"] == self.pinned_image()

    def test_exit_2_fails_the_task_at_once_with_the_steps_error(self):
        from airflow.providers.common.compat.sdk import AirflowFailException

        from operators.trainer_exit import TrainerStepFailed

        with pytest.raises(TrainerStepFailed,
                           match=r"^exit_with: asked for exit 2 \(exit 2: permanent, not retried"):
            self.run(self.operator(2))
        assert issubclass(TrainerStepFailed, AirflowFailException)  # Airflow does not retry it

    @pytest.mark.parametrize("code, kind", [(75, "transient"), (1, "crash"), (3, "crash")])
    def test_transient_errors_and_crashes_fail_the_try_for_a_retry(self, code, kind):
        from airflow.providers.common.compat.sdk import AirflowFailException

        from operators.trainer_exit import TrainerStepRetriable

        with pytest.raises(TrainerStepRetriable, match=rf"^exit_with: asked for exit {code} "
                                                       rf"\(exit {code}: {kind}, retried") as failed:
            self.run(self.operator(code))
        assert not isinstance(failed.value, AirflowFailException)

    def test_a_kill_stops_the_step(self):
        from airflow.providers.common.compat.sdk import TaskDeferred

        op, context = self.operator(-1), self.context()
        outcome: dict[str, Any] = {}

        def execute() -> None:
            try:
                outcome["result"] = op.execute(context)
            except BaseException as exc:
                outcome["error"] = exc

        runner = threading.Thread(target=execute)
        runner.start()
        pid = self.started()["pid"]
        assert _alive(pid)
        runner.join(timeout=0.5 if self.defers() else 0)
        if isinstance(outcome.get("error"), TaskDeferred):  # the task waits in the triggerer
            self.stop_deferred(outcome["error"])
        else:
            op.on_kill()
        deadline = time.monotonic() + STOPPED_WITHIN_S
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        runner.join(timeout=STOPPED_WITHIN_S)
        assert not _alive(pid), "the step outlived its kill"
        assert not runner.is_alive(), "the task did not end once its step was stopped"

    def defers(self) -> bool:
        return False

    def test_an_unpinned_image_is_refused_before_anything_starts(self):
        from operators.image_pinning import ImageNotAllowedError

        with pytest.raises(ImageNotAllowedError, match="is not pinned"):
            self.run(self.operator(0, image=self.unpinned_image()))
        assert not (self.artifacts / "started.json").exists()
        assert self.launched() == []

    def test_the_step_runs_exactly_the_pinned_image(self):
        self.run(self.operator(0))
        assert self.started()["image"] == self.pinned_image()
        assert self.launched() in ([], [self.pinned_image()])
