"""Read predict's window once per run, before the shards score it.

Checks the quality of the events in the window of ``--lookback-days`` ending at ``--run-date``
(the same rules and ``--max-bad-fraction`` as predict_task), aggregates them per (user, item)
over the published model's items (or ``--model-uri``'s) and writes one file per shard of
``--n-shards`` (``runs/<run_date>/predict-window/<i>-of-<n>.npz``) and, last,
``predict-window.json``. Each predict shard then loads its own file (:func:`load_prepared`):
BigQuery scans the window once whatever ``--n-shards`` is, not once per shard; a shard holds
only its users; and an event sent twice with different users counts once across shards, as it
does in one process. The window create_cf_matrices read for the date is reused when nothing it
was read from has changed (:mod:`trainer.data.interaction_cache`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys

import numpy as np

from trainer import contract
from trainer.core import profile
from trainer.core.errors import TrainerError, TransientError
from trainer.data.date_windows import DateRange, lookback
from trainer.data.events import EventSource, add_window_args, check_window_args
from trainer.data.interaction_cache import WindowInteractions, partitions_version, why_not_reuse
from trainer.data.shards import MAX_SHARDS, Shard, all_shards, shard_mask, shard_of_user
from trainer.model.idmap import IdMap
from trainer.model.model_artifact import ModelArtifact, load_model
from trainer.step import cli
from trainer.storage import artifacts, layout
from trainer.storage.clients import bigquery_client
from trainer.storage.model_pointer import published_model_uri
from trainer.storage.tables import EVENTS, table_id

log = logging.getLogger("trainer.predict_window_task")

def build_parser() -> argparse.ArgumentParser:
    parser = cli.base_parser(__doc__.split("\n\n")[0])
    cli.add_run_date(parser)
    cli.add_artifacts_uri(parser)
    add_window_args(parser)
    parser.add_argument("--model-uri", help="model whose items the window is read over "
                        "(default: the published one)")
    parser.add_argument("--n-shards", type=int, default=1,
                        help=f"predict's shards (1..{MAX_SHARDS}): one file of users each")
    return parser


def validate(args: argparse.Namespace) -> None:
    """The arguments' own rules, before anything is read."""
    cli.require(args, "project", "artifacts_uri")
    check_window_args(args)
    lookback(args.run_date, args.lookback_days)
    Shard(0, args.n_shards)  # the count's own rule


def _request(args: argparse.Namespace, source: EventSource, window: DateRange) -> dict:
    """What a prepared window was read for: a shard uses it only for the same request."""
    return {"source_table": source.table, "window": [window.start.isoformat(), window.end.isoformat()],
            "event_weights": args.event_weights, "max_id_bytes": args.max_id_bytes}


def saved_training_window(store: artifacts.ArtifactStore, client, args: argparse.Namespace,
                          source: EventSource, window: DateRange, report, model: ModelArtifact,
                          version: list | None = None) -> tuple[IdMap, object, str] | None:
    """The window's users, their interactions over the model's items and the file they came
    from, as create_cf_matrices read them for this run date, when nothing it was read from has
    changed and the model knows exactly its items; None (read BigQuery again) otherwise, with
    the reason logged. ``version``: the window's partitions as the caller already read them
    (each read is a billed query)."""
    try:
        manifest = store.read_json(artifacts.join(layout.run_prefix(args.artifacts_uri, args.run_date),
                                                  contract.MANIFEST_RECORD))
    except FileNotFoundError:
        log.info("reading the window from BigQuery: no matrices for run date %s", args.run_date)
        return None
    entry = manifest.get("window_interactions")
    if entry and version is None:
        version = partitions_version(client, source.table, window)
    reason = why_not_reuse(entry, source.table, window, args.event_weights, report.to_dict(), version)
    if reason is None and manifest.get("counts", {}).get("items") != len(model.items):
        reason = f"model {model.model_id} was not trained on these items"
    if reason is None:
        payload = store.read_bytes(entry["uri"])
        if artifacts.sha256(payload) != entry["sha256"]:  # a damaged copy only costs the read
            reason = f"checksum mismatch for {entry['uri']}: file does not match its manifest"
        else:
            whole = WindowInteractions.from_bytes(payload)
            if whole.items != model.items:
                reason = f"model {model.model_id} was not trained on these items"
    if reason is not None:
        log.info("reading the window from BigQuery: %s", reason)
        return None
    log.info("reusing the window create_cf_matrices read for %s (%s: partitions and quality "
             "counts unchanged): %d users, %d interactions", args.run_date, entry["uri"],
             len(whole.users), whole.matrix.nnz)
    return whole.users, whole.matrix, entry["uri"]


def read_window(store: artifacts.ArtifactStore, client, args: argparse.Namespace, source: EventSource,
                window: DateRange, model: ModelArtifact, shard: Shard | None = None,
                version: list | None = None):
    """(quality report, users, interactions over the model's items, the saved window's URI or
    None) of the window, from BigQuery or create_cf_matrices' saved window; only ``shard``'s
    users when one is given (a shard that reads by itself aggregates only its users)."""
    from trainer.model.matrices import build_csr  # scipy: only the steps that build matrices

    report = source.checked_quality(window, args.event_weights, args.max_bad_fraction)
    profile.count("rows_in", report.rows_read)
    saved = saved_training_window(store, client, args, source, window, report, model, version)
    if saved is not None:
        users, matrix, uri = saved
        if shard is not None and shard.count > 1:
            return report, *_own_users(users, matrix, shard), uri
        return report, users, matrix, uri
    aggregated = source.interactions(window, args.event_weights, shard=shard)
    log.info("aggregated %d (user, item) interactions from %d events%s", len(aggregated),
             report.valid_rows, f" ({shard}'s users)" if shard else "")
    users = IdMap(aggregated["user_id"])
    return report, users, build_csr(aggregated, users, model.items), None


def _own_users(users: IdMap, matrix, shard: Shard):
    rows = np.flatnonzero(shard_mask(users.ids, shard))
    return IdMap(users.ids[rows]), matrix[rows]


def load_prepared(store: artifacts.ArtifactStore, client, args: argparse.Namespace, source: EventSource,
                  window: DateRange, model: ModelArtifact, shard: Shard | None):
    """(users, interactions) of ``shard`` (every user when None) from the window this step
    prepared for the run, when it was read for the same request and model and its partitions
    are unchanged since; None otherwise (the caller reads BigQuery itself), with the reason."""
    uri = layout.prepared_window_record(args.artifacts_uri, args.run_date)
    try:
        record = store.read_json(uri)
    except FileNotFoundError:
        log.info("no window prepared for %s: reading it here", args.run_date)
        return None
    reason = None
    if record.get("model_id") != model.model_id:
        reason = f"it was read for model {record.get('model_id')}, not {model.model_id}"
    elif any(record.get(k) != v for k, v in _request(args, source, window).items()):
        reason = "it was read for another window, table, weights or id limit"
    elif record.get("partitions") is None or record["partitions"] != partitions_version(
            client, source.table, window):
        reason = "the window's partitions changed since"
    count = shard.count if shard is not None else 1
    if reason is None and record.get("n_shards") != count:
        reason = f"it was split for {record.get('n_shards')} shard(s), not {count}"
    part = record["parts"][shard.index if shard is not None else 0] if reason is None else {}
    if reason is None:
        try:
            payload = store.read_bytes(part["uri"])
        except FileNotFoundError:  # forget_user_task deletes it: a cache, read again here
            payload = None
            reason = f"{part['uri']} is gone"
        if payload is not None and artifacts.sha256(payload) != part["sha256"]:
            reason = f"checksum mismatch for {part['uri']}: file does not match its record"
    if reason is not None:
        log.info("not using the window prepared for %s (%s): reading it here", args.run_date, reason)
        return None
    prepared = WindowInteractions.from_bytes(payload)
    log.info("using the window prepared for %s (%s): %d users, %d interactions%s", args.run_date,
             part["uri"], len(prepared.users), prepared.matrix.nnz, f" ({shard}'s users)" if shard else "")
    return prepared.users, prepared.matrix


def main(args: argparse.Namespace) -> None:
    validate(args)
    store = artifacts.ArtifactStore(args.project)
    try:
        model_uri = args.model_uri or published_model_uri(store, args.artifacts_uri)
        with profile.phase("read", "reading the model"):
            model = load_model(store, model_uri)
    except TransientError:
        raise
    except TrainerError as exc:
        # The window is a cache over the model's items: without a model that loads there is
        # nothing to prepare, and predict_task, which owns the model's checks, fails on it.
        log.warning("no window prepared, the model does not load (predict_task reports it): %s", exc)
        return
    client = bigquery_client(args.project, args.location)
    source = EventSource(client, table_id(args.project, args.dataset, EVENTS), args.max_id_bytes)
    window = lookback(args.run_date, args.lookback_days)
    with profile.phase("read", "reading events"):
        # Before the read: a change during it then shows as a different version to the shards.
        version = partitions_version(client, source.table, window)
        report, users, interactions, cache = read_window(store, client, args, source, window, model,
                                                  version=version)
    prefix = layout.run_prefix(args.artifacts_uri, args.run_date)
    parts = []
    owners = np.fromiter((shard_of_user(u, args.n_shards) for u in users.ids), dtype=np.int32,
                         count=len(users))
    # One file per shard: a shard loads its own users only, so its memory shrinks with n_shards.
    for shard in all_shards(args.n_shards):
        rows = np.flatnonzero(owners == shard.index)
        own_users, own = IdMap(users.ids[rows]), interactions[rows]
        with profile.phase("write", f"serialising {shard}'s window"):
            payload = WindowInteractions(own_users, model.items, own).to_bytes()
        uri = artifacts.join(prefix, layout.prepared_window_file(shard.index, shard.count))
        with profile.phase("write", f"writing {len(payload)} bytes of {shard}'s window"):
            store.write_bytes(uri, payload)
        parts.append({"uri": uri, "sha256": artifacts.sha256(payload), "bytes": len(payload),
                      "users": len(own_users), "interactions": int(own.nnz)})
    record = {"model_id": model.model_id, "model_uri": model_uri, **_request(args, source, window),
              "quality": report.to_dict(), "partitions": version, "n_shards": args.n_shards,
              "parts": parts, "window_cache": cache, "users": len(users),
              "interactions": int(interactions.nnz),
              "created_at": dt.datetime.now(dt.UTC).isoformat()}
    # The parts first, their record last: a record always describes complete files.
    store.write_json(layout.prepared_window_record(args.artifacts_uri, args.run_date), record)
    profile.count("rows_out", int(interactions.nnz))
    log.info("prepared the window %s for predict in %d part(s): %d users, %d interactions over %d "
             "items of model %s", window, args.n_shards, len(users), interactions.nnz, len(model.items),
             model.model_id)


if __name__ == "__main__":
    sys.exit(cli.run_step("predict_window_task", main, build_parser(), validate=validate))
