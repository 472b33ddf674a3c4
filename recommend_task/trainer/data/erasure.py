"""Erase learners from everything the product wrote (forget_user_task).

BigQuery (the dataset's tables, found by listing it, so leftovers of killed steps count too):

* every table with a ``user_id`` column (``events``, ``recommendations``, prediction part and
  staging tables): the learners' rows deleted (DML); a part's record under
  ``runs/<date>/predict-parts/`` is recounted from its table, so a pending publish still validates;
* ``event_stats``: ``top_user_id`` set to NULL and the id replaced by :data:`PLACEHOLDER` in the
  anomaly lines, on the rows that name them (an UPDATE conditioned on the row being unchanged).

Artifacts (every object under the root):

* ``models/<id>/``: the model file is rewritten without the learners' ids and factor rows under
  a new name (``model-<sha256[:12]>.npz``), then ``model.json`` is swapped to name it with its
  checksums (one compare-and-swap), then the old file is deleted. A reader sees the old model or
  the new one, whole; the lifecycle mark (``customTime``) moves with it.
* ``runs/<date>/``: ``matrices.npz`` and ``window.npz`` the same way, the run's ``manifest.json``
  swapped to name the new files with their checksums and counts;
* any JSON or text object: a string equal to an id becomes null, an id inside a string (an
  anomaly line, a status record's error) becomes :data:`PLACEHOLDER`.

Each rewrite leaves something a reader accepts, so a step killed midway leaves the product
consistent and a retry finishes the job (an unreferenced old file holding an id is deleted).
Item factors and popularity counts are aggregates over every learner: they stay, and the next
training no longer sees the learners' events. Logs name places and counts, never an id.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import io
import json
import logging
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from google.cloud import bigquery

from trainer import contract
from trainer.core.errors import ConcurrentUpdateError, TrainerError
from trainer.model.idmap import IdMap
from trainer.storage import artifacts, bq, layout, tables
from trainer.storage.clients import bq_retry
from trainer.storage.partitions import query_parameter

# trainer.<module>: log filters keep working when a module moves between subpackages.
log = logging.getLogger("trainer.erasure")

PLACEHOLDER = "[forgotten learner]"
UPDATE_ATTEMPTS = 5


@dataclasses.dataclass
class Tally:
    """What was erased where: ``place -> count`` (rows, fields or objects), in order."""

    counts: dict[str, int] = dataclasses.field(default_factory=collections.OrderedDict)

    def add(self, place: str, count: int) -> None:
        if count:
            self.counts[place] = self.counts.get(place, 0) + count
            log.info("%s: %d erased", place, count)

    def total(self) -> int:
        return sum(self.counts.values())


class Scrubber:
    """Removes ids from JSON values and text."""

    def __init__(self, ids: list[str]) -> None:
        self.ids = set(ids)
        # Longest first: an id that contains another one is replaced whole. An id stands alone
        # (not inside a longer word), or quoted as the anomaly lines quote it.
        alternatives = "|".join(re.escape(i) for i in sorted(self.ids, key=len, reverse=True))
        self._pattern = re.compile(
            rf"'(?:{alternatives})'|\"(?:{alternatives})\"|(?<!\w)(?:{alternatives})(?!\w)")

    def text(self, value: str) -> str:
        return self._pattern.sub(lambda m: PLACEHOLDER if m.group()[0] not in "'\"" else
                                 f"{m.group()[0]}{PLACEHOLDER}{m.group()[0]}", value)

    def json(self, value: Any) -> tuple[Any, int]:
        """``value`` with the ids gone, and how many strings changed."""
        if isinstance(value, str):
            if value in self.ids:
                return None, 1
            new = self.text(value)
            return new, int(new != value)
        if isinstance(value, list):
            out, changed = [], 0
            for item in value:
                new, n = self.json(item)
                out.append(new)
                changed += n
            return out, changed
        if isinstance(value, dict):
            out, changed = {}, 0
            for key, item in value.items():
                new_key = PLACEHOLDER if key in self.ids else key
                new, n = self.json(item)
                out[new_key] = new
                changed += n + int(new_key != key)
            return out, changed
        return value, 0


# -- BigQuery ------------------------------------------------------------------------------

def _ids_param(ids: list[str]) -> bigquery.ArrayQueryParameter:
    return bigquery.ArrayQueryParameter("ids", "STRING", ids)


def erase_tables(client, project: str, dataset: str, ids: list[str], tally: Tally) -> list[str]:
    """Delete the learners' rows from every table of the dataset with a ``user_id`` column and
    scrub ``event_stats``; returns the part tables whose rows changed."""
    parts = []
    try:
        listed = list(client.list_tables(f"{project}.{dataset}", retry=bq_retry()))
    except Exception as exc:
        from google.api_core.exceptions import NotFound

        if isinstance(exc, NotFound):
            log.info("dataset %s.%s does not exist: no table to erase from", project, dataset)
            return parts
        raise
    for item in sorted(listed, key=lambda t: t.table_id):
        if item.table_type != "TABLE":
            continue  # views (recommendations_latest) show their tables' rows
        table_id = f"{project}.{dataset}.{item.table_id}"
        if item.table_id == tables.EVENT_STATS:
            tally.add(f"{item.table_id}: rows naming a learner", scrub_event_stats(client, table_id, ids))
            continue
        schema = client.get_table(table_id, retry=bq_retry()).schema
        if not any(f.name == "user_id" and f.field_type == "STRING" and f.mode != "REPEATED" for f in schema):
            continue
        job = client.query(f"DELETE FROM `{table_id}` WHERE user_id IN UNNEST(@ids)",
                           job_config=bq.job_config({"ids": _ids_param(ids)}), retry=bq_retry(),
                           job_retry=None)
        job.result(retry=bq_retry())
        deleted = int(job.num_dml_affected_rows or 0)
        tally.add(f"{item.table_id}: rows", deleted)
        if item.table_id.startswith("_part_"):
            parts.append(table_id)
    return parts


def scrub_event_stats(client, table_id: str, ids: list[str]) -> int:
    """Clear ``top_user_id`` and the ids in ``anomalies`` on every row naming a learner. Each row
    is updated only if it is still as read (``computed_at``): a concurrent upsert of the day by
    create_cf_matrices is read again, not overwritten."""
    scrubber, fixed = Scrubber(ids), 0
    schema = {f.name: f for f in tables.EVENT_STATS_SPEC.schema}
    for _ in range(UPDATE_ATTEMPTS):
        rows = [dict(r.items()) for r in bq.run(client, f"""
            SELECT run_date, computed_at, top_user_id, anomalies FROM `{table_id}`""")]
        stale = []
        for row in rows:
            anomalies = [scrubber.text(a) for a in row["anomalies"] or []]
            top = None if row["top_user_id"] in scrubber.ids else row["top_user_id"]
            if anomalies == list(row["anomalies"] or []) and top == row["top_user_id"]:
                continue
            job = client.query(f"""
                UPDATE `{table_id}` SET top_user_id = @top_user_id, anomalies = @anomalies
                WHERE run_date = @run_date AND computed_at = @computed_at""",
                job_config=bq.job_config({
                    "top_user_id": query_parameter(schema["top_user_id"], top),
                    "anomalies": query_parameter(schema["anomalies"], anomalies),
                    "run_date": row["run_date"], "computed_at": row["computed_at"]}),
                retry=bq_retry(), job_retry=None)
            job.result(retry=bq_retry())
            if job.num_dml_affected_rows:
                fixed += 1
            else:
                stale.append(row["run_date"])
        if not stale:
            return fixed
        log.info("%d %s rows changed while being scrubbed: reading them again", len(stale), table_id)
    raise ConcurrentUpdateError(f"{table_id} kept changing under {UPDATE_ATTEMPTS} attempts to scrub it; "
                                "re-run to retry")


def recount_parts(client, store: artifacts.ArtifactStore, artifacts_uri: str, parts: list[str],
                  tally: Tally) -> None:
    """Bring each part record naming one of ``parts`` in line with its table (rows and users), so
    publish_predictions_task validates the parts as they now are."""
    if not parts:
        return
    for uri in _objects(store, artifacts.join(artifacts_uri, contract.RUNS_DIR)):
        if "/predict-parts/" not in uri or not uri.endswith(".json"):
            continue
        versioned = store.read_versioned(uri)
        record = json.loads(versioned.data)
        if record.get("table") not in parts:
            continue
        counts = next(iter(bq.run(client, f"""
            SELECT COUNT(*) AS rows_, COUNT(DISTINCT user_id) AS users FROM `{record['table']}`""")))
        updated = {**record, "rows": int(counts["rows_"]), "users": int(counts["users"])}
        if updated != record:
            store.compare_and_swap(uri, _json_bytes(updated), versioned.generation)
            tally.add("prediction part records recounted", 1)


# -- artifacts -----------------------------------------------------------------------------

def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, indent=2, sort_keys=True, default=str).encode()


def _objects(store: artifacts.ArtifactStore, root: str) -> Iterator[str]:
    """Every object under ``root`` (sorted), without the local store's lock and temporary files."""
    if artifacts.is_gcs(root):
        bucket, prefix = store.bucket_and_name(root.rstrip("/") + "/x")
        prefix = prefix[:-1]
        from trainer.storage.artifacts import gcs_retry

        names = sorted(b.name for b in bucket.client.list_blobs(bucket, prefix=prefix, retry=gcs_retry()))
        yield from (f"gs://{bucket.name}/{name}" for name in names)
        return
    base = Path(root)
    if base.is_dir():
        for path in sorted(base.rglob("*")):
            if path.is_file() and not path.name.endswith(".lock") and not path.name.startswith("."):
                yield str(path)


def _delete(store: artifacts.ArtifactStore, uri: str) -> None:
    if artifacts.is_gcs(uri):
        from google.api_core.exceptions import NotFound

        with contextlib.suppress(NotFound):
            bucket, name = store.bucket_and_name(uri)
            bucket.blob(name).delete(retry=artifacts.gcs_retry())
        return
    Path(uri).unlink(missing_ok=True)


def _custom_time(store: artifacts.ArtifactStore, uri: str):
    if not artifacts.is_gcs(uri):
        return None
    bucket, name = store.bucket_and_name(uri)
    blob = bucket.get_blob(name, retry=artifacts.gcs_retry())
    return blob.custom_time if blob is not None else None


def _set_custom_time(store: artifacts.ArtifactStore, uri: str, when) -> None:
    """The lifecycle mark of the file replaced (Cloud Storage moves it only forward)."""
    if when is None or not artifacts.is_gcs(uri):
        return
    bucket, name = store.bucket_and_name(uri)
    blob = bucket.get_blob(name, retry=artifacts.gcs_retry())
    if blob.custom_time is None or blob.custom_time < when:
        blob.custom_time = when
        blob.patch(retry=artifacts.gcs_retry())


def _user_ids(store: artifacts.ArtifactStore, uri: str) -> np.ndarray | None:
    """The ``user_ids`` array of an ``.npz``, read alone (a range read on Cloud Storage: a model or
    matrices file is mostly numbers); None if it has none."""
    if artifacts.is_gcs(uri):
        bucket, name = store.bucket_and_name(uri)
        reader = bucket.blob(name).open("rb", chunk_size=1 << 20, retry=artifacts.gcs_retry())
    else:
        reader = open(uri, "rb")  # noqa: SIM115 - closed below
    with reader, zipfile.ZipFile(reader) as archive:
        members = {name.removesuffix(".npy") for name in archive.namelist()}
        wanted = [m for m in (*IdMap.array_names("user_ids"), "user_ids") if m in members]
        if not wanted:
            return None
        arrays = {}
        for name in wanted:
            with archive.open(f"{name}.npy") as member:
                arrays[name] = np.load(io.BytesIO(member.read()), allow_pickle=False)
        return IdMap.from_arrays(arrays, "user_ids").ids


def _among(user_ids: np.ndarray, ids: list[str]) -> np.ndarray:
    """Which of ``user_ids`` are ``ids``, byte for byte (Arrow: numpy's isin misses ids with NULs)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    found = pc.is_in(pa.array(user_ids, pa.string()), value_set=pa.array(ids, pa.string()))
    return found.to_numpy(zero_copy_only=False).astype(bool)


def _holds(user_ids: np.ndarray | None, ids: list[str]) -> bool:
    return user_ids is not None and bool(_among(user_ids, ids).any())


def _without_users(payload: bytes, ids: list[str]) -> tuple[bytes, dict[str, Any], int]:
    """An ``.npz`` of this product with the rows of ``ids`` removed from every array that has a
    row per user (``user_ids``, factors, CSR matrices); returns the bytes, the new arrays and how
    many users went."""
    import scipy.sparse as sp

    with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    users = IdMap.from_arrays(arrays, "user_ids").ids
    keep = ~_among(users, ids)
    removed = int((~keep).sum())
    out = {name: array for name, array in arrays.items()
           if name not in ("user_ids", *IdMap.array_names("user_ids"))}
    out.update(IdMap(users[keep]).to_arrays("user_ids"))
    if "user_factors" in arrays:
        out["user_factors"] = arrays["user_factors"][keep]
    prefixes = [name[: -len("indptr")] for name in arrays if name.endswith("indptr")]
    for prefix in prefixes:  # "train_", "holdout_" (matrices) or "" (window)
        matrix = sp.csr_matrix(
            (arrays[f"{prefix}data"], arrays[f"{prefix}indices"], arrays[f"{prefix}indptr"]),
            shape=tuple(arrays[f"{prefix}shape"]))
        if matrix.shape[0] != len(users):
            raise TrainerError(f"cannot erase learners from an array file: {prefix or 'its'} matrix has "
                               f"{matrix.shape[0]} rows for {len(users)} users")
        kept = matrix[keep]
        kept.sort_indices()
        out[f"{prefix}data"], out[f"{prefix}indices"] = kept.data, kept.indices
        out[f"{prefix}indptr"], out[f"{prefix}shape"] = kept.indptr, np.array(kept.shape)
    buf = io.BytesIO()
    np.savez(buf, **out)
    return buf.getvalue(), out, removed


def _replacement_name(uri: str, payload: bytes) -> str:
    """``<dir>/<stem>-<sha256[:12]>.npz``: a new object, so the one a reader may hold stays whole."""
    directory, _, name = uri.rpartition("/")
    stem = name.removesuffix(".npz").split("-")[0]
    return f"{directory}/{stem}-{artifacts.sha256(payload)[:12]}.npz"


class ArtifactEraser:
    """Erases the learners from every object under an artifacts root (see the module's doc)."""

    def __init__(self, store: artifacts.ArtifactStore, root: str, ids: list[str], tally: Tally) -> None:
        self.store, self.root, self.ids, self.tally = store, root, ids, tally
        self.scrubber = Scrubber(ids)

    def run(self) -> None:
        uris = list(_objects(self.store, self.root))
        for uri in uris:
            if uri.endswith("/model.json"):
                self._model(uri)
            elif uri.endswith("/manifest.json"):
                self._run_manifest(uri)
            elif uri.endswith("/" + layout.PREPARED_WINDOW_RECORD):
                self._prepared_window(uri)
        for uri in _objects(self.store, self.root):  # again: the rewrites above named new files
            if uri.endswith(".npz"):
                if _holds(_user_ids(self.store, uri), self.ids):
                    self._orphan(uri)
            else:
                self._scrub(uri)

    def _orphan(self, uri: str) -> None:
        """An array file holding an id that no metadata names any more (left by a step killed
        between the swap and the delete): nothing reads it, so it goes. One still named would be
        an array file of a kind this step does not know: refused rather than left."""
        if f"/{layout.PREPARED_WINDOW_DIR}/" in uri:  # a cache, read again when gone
            _delete(self.store, uri)
            self.tally.add("prepared predict windows deleted", 1)
            return
        named = set()
        directory = uri.rpartition("/")[0]
        for meta in ("model.json", contract.MANIFEST_RECORD):
            try:
                record = self.store.read_json(artifacts.join(directory, meta))
            except FileNotFoundError:
                continue
            if meta == "model.json":
                named.add(artifacts.join(directory, record.get("file") or "model.npz"))
            else:
                named |= {record.get("matrices_uri"), (record.get("window_interactions") or {}).get("uri")}
        if uri in named or not named:
            raise TrainerError(f"cannot erase learners from {uri}: an array file this step does not know")
        _delete(self.store, uri)
        self.tally.add("superseded array files deleted", 1)

    def _rewrite(self, uri: str) -> tuple[str, bytes, dict[str, Any], int] | None:
        """The file at ``uri`` without the learners, written under its new name; None when it
        holds none of them."""
        if not _holds(_user_ids(self.store, uri), self.ids):
            return None
        payload, arrays, removed = _without_users(self.store.read_bytes(uri), self.ids)
        new_uri = _replacement_name(uri, payload)
        self.store.write_bytes(new_uri, payload)
        _set_custom_time(self.store, new_uri, _custom_time(self.store, uri))
        return new_uri, payload, arrays, removed

    def _swap(self, uri: str, generation: int | None, record: dict[str, Any]) -> None:
        record, _ = self.scrubber.json(record)
        self.store.compare_and_swap(uri, _json_bytes(record), generation)

    def _model(self, meta_uri: str) -> None:
        directory = meta_uri.rpartition("/")[0]
        versioned = self.store.read_versioned(meta_uri)
        meta = json.loads(versioned.data)
        old = artifacts.join(directory, meta.get("file", "model.npz"))
        rewritten = self._rewrite(old)
        if rewritten is None:
            return
        new_uri, payload, _, removed = rewritten
        meta.update(file=new_uri.rpartition("/")[2], sha256=artifacts.sha256(payload),
                    md5=artifacts.md5_b64(payload), bytes=len(payload))
        self._swap(meta_uri, versioned.generation, meta)
        if new_uri != old:
            _delete(self.store, old)
        self.tally.add("model files: learners", removed)

    def _run_manifest(self, manifest_uri: str) -> None:
        versioned = self.store.read_versioned(manifest_uri)
        manifest = json.loads(versioned.data)
        superseded = []
        matrices = manifest.get("matrices_uri")
        rewritten = self._rewrite(matrices) if matrices else None
        if rewritten:
            new_uri, payload, arrays, removed = rewritten
            holdout_rows = np.diff(arrays["holdout_indptr"]) if "holdout_indptr" in arrays else None
            manifest.update(matrices_uri=new_uri, sha256=artifacts.sha256(payload), bytes=len(payload))
            manifest.setdefault("counts", {}).update(
                users=len(arrays["user_ids_offsets"]) - 1, train_nnz=len(arrays["train_data"]),
                holdout_nnz=len(arrays["holdout_data"]) if "holdout_data" in arrays else 0,
                holdout_users=int((holdout_rows > 0).sum()) if holdout_rows is not None else 0,
                validation_nnz=len(arrays["validation_data"]) if "validation_data" in arrays else 0)
            superseded.append(matrices)
            self.tally.add("matrices files: learners", removed)
        window = manifest.get("window_interactions") or {}
        old_window = window.get("uri")
        rewritten = self._rewrite(old_window) if old_window else None
        if rewritten:
            new_uri, payload, _, removed = rewritten
            # Its partitions changed with the deleted events, so predict reads the window again.
            window.update(uri=new_uri, sha256=artifacts.sha256(payload), bytes=len(payload))
            superseded.append(old_window)
            self.tally.add("window files: learners", removed)
        if not superseded:
            return
        self._swap(manifest_uri, versioned.generation, manifest)
        for old in superseded:
            if old not in (manifest.get("matrices_uri"), window.get("uri")):
                _delete(self.store, old)

    def _prepared_window(self, record_uri: str) -> None:
        """predict_window_task's window, a cache for the run's predict shards: deleted with its
        record when a part holds a learner (the shards then read the window again)."""
        from google.api_core.exceptions import NotFound

        uris = [part.get("uri") or "" for part in self.store.read_json(record_uri).get("parts", [])]
        holds = False
        for uri in uris:
            with contextlib.suppress(FileNotFoundError, NotFound):  # a step killed before its files
                holds = holds or _holds(_user_ids(self.store, uri), self.ids)
        if holds:
            _delete(self.store, record_uri)
            for uri in uris:
                _delete(self.store, uri)
            self.tally.add("prepared predict windows deleted", 1)

    def _scrub(self, uri: str) -> None:
        """A JSON or text object: the ids replaced (compare-and-swap: a concurrent writer wins and
        the retry scrubs its version)."""
        versioned = self.store.read_versioned(uri)
        if versioned.data is None:
            return
        try:
            text = versioned.data.decode()
        except UnicodeDecodeError:
            if any(i.encode() in versioned.data for i in self.ids):
                raise TrainerError(f"cannot erase learners from {uri}: a binary file this step does not "
                                   "know") from None
            return
        if not any(i in text for i in self.ids):
            return
        try:
            new, changed = self.scrubber.json(json.loads(text))
            data = _json_bytes(new)
        except json.JSONDecodeError:
            scrubbed = self.scrubber.text(text)
            changed, data = int(scrubbed != text), scrubbed.encode()
        if changed:
            self.store.compare_and_swap(uri, data, versioned.generation)
            self.tally.add("records and reports: fields", changed)
