"""What each trainer step reads and writes, as OpenLineage datasets (the provider emits them).

Datasets are named as the stock Google operators and BigQuery's own lineage name them, so a
step's job joins the graph they draw in Dataplex: a table is namespace ``bigquery``, name
``project.dataset.table``; an object is namespace ``gs://bucket``, name its path (a model is its
folder, ``…/models/<model_id>``, the unit every step reads and writes it as).

=========================  ====================================  =====================================
step                       inputs                                outputs
=========================  ====================================  =====================================
check_events (the data     ``events`` (the run date and the      ``event_stats``, its record
check alone)               trailing days, as a subset)
create_cf_matrices         ``events`` (its window as a subset)   matrices, window cache, manifest;
                                                                 ``event_stats``
train                      the run's matrices                    the model folder, the candidate record
evaluate                   the model folder, the matrices, the   ``model_metrics`` (and
                           published model it compared with      ``tuning_trials`` when searched),
                                                                 ``evaluation.json``, ``report.html``
promote_model / rollback   the model folder, ``model_metrics``   ``models/LATEST``, ``publications``
predict_window             ``events`` and the window cache when  the shards' window files, its record
                           it was reused
predict (each shard)       ``models/LATEST``, the model folder,  its part table
                           its window file (else ``events``)
publish_predictions        the part tables                       ``recommendations``,
                                                                 ``recommendations_latest``
feedback                   ``recommendations``, ``events``       ``serving_metrics``
=========================  ====================================  =====================================

Where a dataset depends on what the step did (which model, whether a cache was reused), it is
read from the records the step leaves (:mod:`operators.contract`) when it completes; the start
event carries the datasets known before. Every value that reaches a facet from a trigger or the
data is shown as text: ``&``, ``<`` and ``>`` escaped, control characters dropped, bounded.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from operators import contract
from operators.mrkdwn import escape

Record = Callable[[str], "dict[str, Any] | None"]  # a record's URI -> its JSON, None if absent
RUN_FACET = "recsys_model"  # the run facet of train, evaluate and promote
# The facet's schema is documented in docs/operations.md#lineage; a URN names it (a URI, as the
# spec asks), since no deployment of this project publishes schema files at a fixed URL.
FACET_SCHEMA_URL = "urn:recsys:openlineage:RecsysModelRunFacet:1"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
TEXT_LIMIT = 300


def text(value: Any) -> str:
    """``value`` as a facet shows it: text, never markup; bounded."""
    return escape(_CONTROL.sub(" ", str(value)))[:TEXT_LIMIT]


@dataclass(frozen=True)
class Table:
    """A BigQuery table (namespace ``bigquery``)."""

    name: str  # project.dataset.table


@dataclass(frozen=True)
class Blob:
    """A Cloud Storage object or folder (namespace ``gs://bucket``)."""

    uri: str

    @property
    def namespace_and_name(self) -> tuple[str, str]:
        bucket, _, name = self.uri.removeprefix("gs://").partition("/")
        return f"gs://{bucket}", name


@dataclass
class StepLineage:
    """One step's inputs and outputs, the window it read (``events``' subset) and its run facet."""

    inputs: list[Table | Blob] = field(default_factory=list)
    outputs: list[Table | Blob] = field(default_factory=list)
    window: tuple[str, str] | None = None  # first and last event_date read from events
    run_facet: dict[str, Any] | None = None


@dataclass(frozen=True)
class StepRun:
    """What a step's lineage is resolved from: its rendered arguments and where its records are."""

    step: str
    arguments: tuple[str, ...]
    artifacts_uri: str
    run_date: str
    status_name: str  # its status record's (contract.status_name)
    shard: int | None = None
    data_check: bool = False  # create_cf_matrices_task told to run its data check alone

    def argument(self, name: str) -> str | None:
        """The value of ``--name value`` or ``--name=value`` in the step's arguments."""
        flag = f"--{name}"
        for i, arg in enumerate(self.arguments):
            if arg == flag and i + 1 < len(self.arguments):
                return self.arguments[i + 1]
            if arg.startswith(flag + "="):
                return arg.split("=", 1)[1] or None
        return None

    def table(self, name: str) -> Table:
        return Table(f"{self.argument('project')}.{self.argument('dataset')}.{name}")

    def run_object(self, name: str) -> Blob:
        return Blob(contract.run_record_uri(self.artifacts_uri, self.run_date, name))

    def model(self, model_id: str) -> Blob:
        return Blob(contract.model_prefix(self.artifacts_uri, model_id))


def _model_facet(run: StepRun, read: Record, model_id: str, evaluation: dict | None) -> dict[str, Any]:
    model = contract.model_prefix(run.artifacts_uri, model_id)
    meta = read(contract.join(model, contract.MODEL_METADATA)) or {}
    params = meta.get("params") or {}
    status = read(contract.status_record_uri(run.artifacts_uri, run.run_date, run.status_name)) or {}
    facet: dict[str, Any] = {
        "model_id": text(model_id),
        "image": text(status.get("image") or ""),
        "settings": {k: text(params[k]) for k in ("factors", "regularization", "alpha", "iterations",
                                                   "weighting") if k in params},
    }
    if evaluation:
        model = {k: v for k, v in (evaluation.get("metrics") or {}).get("model", {}).items()
                 if isinstance(v, int | float)}
        facet["evaluation"] = {"verdict": text(evaluation.get("verdict", "")),
                               "primary_metric": text(evaluation.get("primary_metric", "")),
                               "model": model}
    return facet


def _data_check(run: StepRun) -> StepLineage:
    day = dt.date.fromisoformat(run.run_date)
    start = day - dt.timedelta(days=contract.DATA_CHECK_TRAILING_DAYS)
    return StepLineage(inputs=[run.table("events")],
                       outputs=[run.table("event_stats"), run.run_object(contract.EVENT_STATS_RECORD)],
                       window=(start.isoformat(), day.isoformat()))


def _create_cf_matrices(run: StepRun, read: Record | None) -> StepLineage:
    if run.data_check:
        return _data_check(run)
    manifest = read(contract.run_record_uri(run.artifacts_uri, run.run_date, contract.MANIFEST_RECORD)) \
        if read else None
    window = (manifest or {}).get("window") or {}
    outputs: list[Table | Blob] = [run.run_object(contract.MATRICES_FILE)]
    cache = ((manifest or {}).get("window_interactions") or {}).get("uri")
    outputs += [Blob(cache) if cache else run.run_object(contract.WINDOW_CACHE_FILE),
                run.run_object(contract.MANIFEST_RECORD), run.table("event_stats")]
    return StepLineage(inputs=[run.table("events")], outputs=outputs,
                       window=(window["start"], window["end"]) if "start" in window else None)


def _candidate(run: StepRun, read: Record) -> str | None:
    record = read(contract.run_record_uri(run.artifacts_uri, run.run_date, contract.CANDIDATE_RECORD))
    return (record or {}).get("model_id")


def _train(run: StepRun, read: Record | None) -> StepLineage:
    lineage = StepLineage(inputs=[run.run_object(contract.MATRICES_FILE)],
                          outputs=[run.run_object(contract.CANDIDATE_RECORD)])
    model_id = _candidate(run, read) if read else None
    if model_id:
        lineage.outputs.insert(0, run.model(model_id))
        lineage.run_facet = _model_facet(run, read, model_id, None)
    return lineage


def _evaluate(run: StepRun, read: Record | None) -> StepLineage:
    lineage = StepLineage(inputs=[run.run_object(contract.MATRICES_FILE)],
                          outputs=[run.table("model_metrics")])
    model_id = _candidate(run, read) if read else None
    if not model_id:
        return lineage
    model = run.model(model_id)
    lineage.inputs.insert(0, model)
    evaluation = read(contract.join(model.uri, contract.EVALUATION_RECORD))
    if evaluation and evaluation.get("published_model_id"):
        lineage.inputs.append(run.model(evaluation["published_model_id"]))
    if (read(contract.join(model.uri, contract.TRIALS_RECORD)) or {}).get("trials"):  # a search ran
        lineage.outputs.append(run.table("tuning_trials"))
    lineage.outputs += [Blob(contract.join(model.uri, contract.EVALUATION_RECORD)),
                        Blob(contract.join(model.uri, contract.REPORT_PAGE))]
    lineage.run_facet = _model_facet(run, read, model_id, evaluation)
    return lineage


def _promote(run: StepRun, read: Record | None) -> StepLineage:
    lineage = StepLineage(inputs=[run.table("model_metrics")], outputs=[
        Blob(contract.latest_pointer(run.artifacts_uri)), run.table("publications")])
    model_id = run.argument("rollback-to") or (_candidate(run, read) if read else None)
    if model_id:
        lineage.inputs.insert(0, run.model(model_id.strip()))
        if read:
            model = run.model(model_id.strip())
            lineage.run_facet = _model_facet(run, read, model_id.strip(),
                                             read(contract.join(model.uri, contract.EVALUATION_RECORD)))
    return lineage


def _predict_window(run: StepRun, read: Record | None) -> StepLineage:
    record = read(contract.run_record_uri(run.artifacts_uri, run.run_date, contract.PREPARED_WINDOW_RECORD)) \
        if read else None
    lineage = StepLineage(inputs=[run.table("events")])
    if record:
        if record.get("window_cache"):
            lineage.inputs.append(Blob(record["window_cache"]))
        lineage.outputs = [Blob(p["uri"]) for p in record.get("parts", [])]
        window = record.get("window") or []
        lineage.window = (window[0], window[1]) if len(window) == 2 else None
    lineage.outputs.append(run.run_object(contract.PREPARED_WINDOW_RECORD))
    return lineage


def _part_table(run: StepRun, index: int, count: int) -> Table:
    return Table(contract.part_table(run.table("recommendations").name, run.run_date, index, count))


def _predict(run: StepRun, read: Record | None) -> StepLineage:
    count = int(run.argument("n-shards") or 1)
    index = run.shard if run.shard is not None else int(run.argument("shard") or 0)
    lineage = StepLineage(inputs=[Blob(contract.latest_pointer(run.artifacts_uri))],
                          outputs=[_part_table(run, index, count)])
    record = read(contract.run_record_uri(run.artifacts_uri, run.run_date,
                                          contract.predict_part_record(index, count))) if read else None
    if record:
        lineage.inputs.append(Blob(record["model_uri"]))
        if record.get("prepared"):
            lineage.inputs.append(run.run_object(contract.prepared_window_file(index, count)))
        else:
            lineage.inputs.append(Blob(record["window_cache"]) if record.get("window_cache")
                                  else run.table("events"))
    return lineage


def _publish(run: StepRun, read: Record | None) -> StepLineage:
    count = int(run.argument("n-shards") or 1)
    return StepLineage(inputs=[_part_table(run, i, count) for i in range(count)],
                       outputs=[run.table("recommendations"), run.table("recommendations_latest")])


def _feedback(run: StepRun, read: Record | None) -> StepLineage:
    return StepLineage(inputs=[run.table("recommendations"), run.table("events")],
                       outputs=[run.table("serving_metrics")])


RESOLVERS: dict[str, Callable[[StepRun, Record | None], StepLineage]] = {
    "create_cf_matrices_task": _create_cf_matrices,
    "train_task": _train,
    "evaluate_task": _evaluate,
    "promote_model_task": _promote,
    "predict_window_task": _predict_window,
    "predict_task": _predict,
    "publish_predictions_task": _publish,
    "feedback_task": _feedback,
}


def step_lineage(run: StepRun, read: Record | None) -> StepLineage:
    """``run``'s datasets; with ``read`` (the step has completed) those its records name too.
    A step outside the table (forget_user_task, which erases a user everywhere) has none."""
    resolver = RESOLVERS.get(run.step)
    return resolver(run, read) if resolver else StepLineage()


def operator_lineage(lineage: StepLineage) -> Any:
    """The provider's ``OperatorLineage`` of ``lineage`` (imported here: only the provider calls it)."""
    import attrs
    from airflow.providers.openlineage.extractors import OperatorLineage
    from openlineage.client.event_v2 import InputDataset, OutputDataset
    from openlineage.client.facet_v2 import RunFacet
    from openlineage.client.generated.base_subset_dataset import (
        BinarySubsetCondition,
        CompareSubsetCondition,
        FieldBaseCompareExpression,
        InputSubsetInputDatasetFacet,
        LiteralCompareExpression,
    )

    @attrs.define
    class RecsysModelRunFacet(RunFacet):
        """The model a run produced, evaluated or published: id, image, settings, evaluation."""

        model_id: str
        image: str
        settings: dict
        evaluation: dict | None = None

        @staticmethod
        def _get_schema() -> str:
            return FACET_SCHEMA_URL

    def dataset(item: Table | Blob, cls: type) -> Any:
        if isinstance(item, Table):
            namespace, name = "bigquery", item.name
        else:
            namespace, name = item.namespace_and_name
        facets = {}
        if cls is InputDataset and lineage.window and name.endswith(".events"):
            def bound(op: str, day: str) -> Any:
                return CompareSubsetCondition(left=FieldBaseCompareExpression(field="event_date"),
                                              right=LiteralCompareExpression(value=day), comparison=op)
            facets["subset"] = InputSubsetInputDatasetFacet(inputCondition=BinarySubsetCondition(
                left=bound("GREATER_EQUAL_THAN", lineage.window[0]),
                right=bound("LESS_EQUAL_THAN", lineage.window[1]), operator="AND"))
        if cls is InputDataset:
            return InputDataset(namespace=namespace, name=name, inputFacets=facets or None)
        return OutputDataset(namespace=namespace, name=name)

    run_facets = {RUN_FACET: RecsysModelRunFacet(**lineage.run_facet)} if lineage.run_facet else {}
    return OperatorLineage(inputs=[dataset(i, InputDataset) for i in lineage.inputs],
                           outputs=[dataset(o, OutputDataset) for o in lineage.outputs],
                           run_facets=run_facets)
