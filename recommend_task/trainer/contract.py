"""The contract between the trainer image and the Airflow side that launches it.

One file, two copies kept byte-identical by a test: ``recommend_task/trainer/contract.py`` in the
image and ``plugins/operators/contract.py`` beside the DAGs (images and DAGs deploy apart, so
neither side imports the other). Standard library only. Everything a launcher and a step must
agree on is here and nowhere else: the exit codes, what a step is told about the Airflow attempt
running it, where its status record lives and what it holds, and the artifact layout the
Airflow side reads (the run folders, the model folders and the ``models/LATEST`` pointer).

Changing a value here changes the image's CLI contract: an older image still runs under newer
DAGs (``image_uri`` can name one), so values are added, never changed (the golden test freezes
them).
"""

from __future__ import annotations

# --- How a step ends ---------------------------------------------------------------------------
# 0 succeeded; 2 permanent (a retry cannot fix it: the task fails at once); 75 transient (an
# external service failed or was busy: retried with backoff; EX_TEMPFAIL of sysexits.h); anything
# else is a crash (retried, the traceback is in the step's log).
EXIT_OK = 0
EXIT_CRASH = 1
EXIT_PERMANENT = 2
EXIT_TRANSIENT = 75
OUTCOMES = {EXIT_OK: "succeeded", EXIT_PERMANENT: "permanent", EXIT_TRANSIENT: "transient",
            EXIT_CRASH: "crash"}
# The step's last line starting with this is its one-line error (what the task's error shows).
ERROR_PREFIX = "ERROR:"


def outcome(exit_code: int) -> str:
    """``succeeded``, ``permanent``, ``transient`` or ``crash`` for a step's exit code."""
    return OUTCOMES.get(exit_code, "crash")


# --- What a step is told about its attempt (environment variables) ----------------------------
STATUS_NAME_ENV = "RECSYS_STATUS_NAME"  # <dag_id>.<task_id>[.<map_index>]: its record's name
AIRFLOW_RUN_ID_ENV = "RECSYS_AIRFLOW_RUN_ID"
TRY_NUMBER_ENV = "RECSYS_TRY_NUMBER"
IMAGE_ENV = "RECSYS_TRAINER_IMAGE"  # the pinned reference the step runs as
LAUNCHER_PID_ENV = "RECSYS_LAUNCHER_PID"  # local runtime: the step dies with this process
ATTEMPT_ENV = (STATUS_NAME_ENV, AIRFLOW_RUN_ID_ENV, TRY_NUMBER_ENV, IMAGE_ENV, LAUNCHER_PID_ENV)
# Told to the steps that estimate their run time first (their task's timeout, in seconds).
TIME_BUDGET_ENV = "RECSYS_TIME_BUDGET_S"
# "Today" for the step's run-date checks, where set (tests); else the UTC date.
TODAY_ENV = "RECSYS_TODAY"
# train_task's tuning mode (off | always | weekly), set by recommend_train's `tune` param. In the
# environment, not an argument: an image built before tuning ignores it and still runs.
TUNE_ENV = "RECSYS_TUNE"
# create_cf_matrices_task's data check alone (recommend_train's check_events task): "decide"
# records the day and ends 0 whatever it found (a person decides on an anomalous day: the
# approval task reads its event_stats record); "refuse" ends 2 on an anomaly (backfills). Unset:
# the check, then the matrices. In the environment: an image before it checks and builds.
DATA_CHECK_ENV = "RECSYS_DATA_CHECK"
DATA_CHECK_MODES = ("decide", "refuse")
# The data check reads the run date and the trailing days before it (the anomaly rules' baseline).
DATA_CHECK_TRAILING_DAYS = 7
# Who accepted an anomalous day in Airflow's approval, when, and why: recorded in event_stats.
ACCEPTED_BY_ENV = "RECSYS_ACCEPTED_BY"
ACCEPTED_AT_ENV = "RECSYS_ACCEPTED_AT"
ACCEPT_REASON_ENV = "RECSYS_ACCEPT_REASON"
# The timeouts of the steps whose cost grows with the model's size: the DAGs' execution_timeout,
# and what train_task's search keeps a candidate's refit and scoring at 100M events within.
STEP_TIMEOUT_S = {"train_task": 3 * 3600, "predict_task": 2 * 3600}


def status_name(dag_id: str, task_id: str, map_index: int | None = -1) -> str:
    """The status record's name for one task instance (a mapped one has one per shard)."""
    shard = f".{map_index}" if map_index is not None and int(map_index) >= 0 else ""
    return f"{dag_id}.{task_id}{shard}"


# --- Where things are under the artifacts URI ---------------------------------------------------
RUNS_DIR = "runs"
MODELS_DIR = "models"
STATUS_DIR = "status"
TUNING_DIR = "tuning"  # one record per tuned run date: the settings later runs reuse
LATEST_POINTER = f"{MODELS_DIR}/LATEST"


def join(root: str, *parts: str) -> str:
    """``root/part/...`` without doubled slashes (a ``gs://`` URI or a local path)."""
    return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts)])


def run_prefix(artifacts_uri: str, run_date: str) -> str:
    """The folder of one run date's artifacts (``run_date`` as ``YYYY-MM-DD``)."""
    return join(artifacts_uri, RUNS_DIR, run_date)


def status_prefix(artifacts_uri: str, run_date: str) -> str:
    """The folder of one run date's status records."""
    return join(run_prefix(artifacts_uri, run_date), STATUS_DIR)


def status_record_uri(artifacts_uri: str, run_date: str, name: str) -> str:
    """Where the step named ``name`` (:func:`status_name`) records how it ended."""
    return join(status_prefix(artifacts_uri, run_date), f"{name}.json")


def model_prefix(artifacts_uri: str, model_id: str) -> str:
    """The folder of one trained model."""
    return join(artifacts_uri, MODELS_DIR, model_id)


def tuning_record_uri(artifacts_uri: str, run_date: str) -> str:
    """The settings the search chose on ``run_date`` (``YYYY-MM-DD``), and the model they made."""
    return join(artifacts_uri, TUNING_DIR, f"{run_date}.json")


def latest_pointer(artifacts_uri: str) -> str:
    """The published model's pointer (JSON naming the model; promotion writes it last)."""
    return join(artifacts_uri, LATEST_POINTER)


# Records a run's steps leave in its folder (run_prefix), which the Airflow side reads: the
# Slack summaries and the Recommender page.
EVENT_STATS_RECORD = "event_stats.json"  # create_cf_matrices: the day's quality and anomalies
MANIFEST_RECORD = "manifest.json"  # create_cf_matrices: the matrices and their window
CANDIDATE_RECORD = "candidate.json"  # train: which model the run produced
PROMOTION_RECORD = "promotion.json"  # promote: the verdict
PREDICTIONS_RECORD = "predictions.json"  # publish: what was published, by which image
SERVING_METRICS_RECORD = "serving_metrics.json"  # feedback: the served day measured
FORGET_RECORD = "forget.json"  # forget: what was erased
# ... and in a model's folder (model_prefix).
EVALUATION_RECORD = "evaluation.json"
TRIALS_RECORD = "trials.json"  # train: the tuning search's trials and the chosen settings
REPORT_PAGE = "report.html"


def run_record_uri(artifacts_uri: str, run_date: str, record: str) -> str:
    """Where one of a run's records is (``record``: one of the ``*_RECORD`` names)."""
    return join(run_prefix(artifacts_uri, run_date), record)


# ... and the run's files the Airflow side names in its lineage (operators/lineage.py).
MATRICES_FILE = "matrices.npz"  # create_cf_matrices: the run's matrices
WINDOW_CACHE_FILE = "window.npz"  # create_cf_matrices: the window's interactions predict may reuse
PREPARED_WINDOW_DIR = "predict-window"  # predict_window: one file per predict shard ...
PREPARED_WINDOW_RECORD = "predict-window.json"  # ... and their record
PREDICT_PARTS_DIR = "predict-parts"  # predict: one record per shard's staged part
MODEL_METADATA = "model.json"  # in a model's folder, written last: the model is complete


def prepared_window_file(index: int, count: int) -> str:
    """Shard ``index`` of ``count``'s part of the prepared window, under the run's folder."""
    return f"{PREPARED_WINDOW_DIR}/{index}-of-{count}.npz"


def predict_part_record(index: int, count: int) -> str:
    """Shard ``index`` of ``count``'s record of its staged part, under the run's folder."""
    return f"{PREDICT_PARTS_DIR}/{index}-of-{count}.json"


def part_table(target: str, run_date: str, index: int, count: int) -> str:
    """The table shard ``index`` of ``count`` stages its rows of ``target`` (``project.dataset.
    table``) in for ``run_date`` (``YYYY-MM-DD``): one per shard, beside the target."""
    project, dataset, name = target.split(".")
    return f"{project}.{dataset}._part_{name}_{run_date.replace('-', '')}_{index}_of_{count}"


# --- The status record --------------------------------------------------------------------------
RECORD_FIELDS = ("step", "exit_code", "outcome", "error", "run_date", "airflow_run_id", "try",
                 "image", "uid", "started_at", "finished_at", "seconds", "profile")


def is_record_of(record: object, run_id: str, try_number: int) -> bool:
    """Whether ``record`` was left by try ``try_number`` of Airflow run ``run_id`` (a record of
    another run or try says nothing about this one)."""
    return (isinstance(record, dict) and record.get("airflow_run_id") == run_id
            and record.get("try") == try_number)
