"""The window's interactions as create_cf_matrices read them, for predict_task to reuse.

Both steps of a day aggregate the same window of events; reading it is the most expensive part
of predicting after scoring (measured: docs/benchmarks.md). create_cf_matrices_task therefore
also writes ``runs/<run_date>/window.npz``: every user of the window x the training items, the
weights of the whole window summed (holdout days included), and records next to it what it was
read from: the table, window, event weights, quality counts and the *version* of the window's
partitions. predict_task reuses the file only when all of them are still the same and the model
it scores with has exactly those items; otherwise it reads BigQuery as before. The result is the
same either way (tested).

The version is what BigQuery says about the window's partitions before the read
(``INFORMATION_SCHEMA.PARTITIONS``): rows per partition and, on BigQuery itself, each
partition's last modification time, which any load, DML or streamed row changes. The local
emulator has no modification time: there, only a change in a partition's row count or in the
quality counts is seen, and an in-place UPDATE is not (said in docs/benchmarks.md).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import logging
from typing import Any

import numpy as np
from google.api_core.exceptions import BadRequest, Forbidden, NotFound

from trainer import contract
from trainer.data.date_windows import DateRange
from trainer.model.idmap import IdMap
from trainer.storage import artifacts, bq

# trainer.<module>: log filters keep working when a module moves between subpackages.
log = logging.getLogger("trainer.interaction_cache")

WINDOW_FILE = contract.WINDOW_CACHE_FILE
# Rows not yet in their partition (streaming buffer) or without a partition date: they could
# belong to the window, so they are part of its version too.
_SPECIAL_PARTITIONS = ("__NULL__", "__UNPARTITIONED__")


def partitions_version(client, table: str, window: DateRange) -> list[list[Any]] | None:
    """``[partition_id, total_rows, last_modified_time or None]`` for the window's partitions
    (and the special ones), sorted; None when BigQuery cannot say (then nothing is reused)."""
    project, dataset, name = table.split(".")
    sql = f"""
        SELECT * FROM `{project}.{dataset}.INFORMATION_SCHEMA.PARTITIONS`
        WHERE table_name = @table_name
          AND (partition_id BETWEEN @first AND @last OR partition_id IN {_SPECIAL_PARTITIONS})
    """
    params = {"table_name": name, "first": f"{window.start:%Y%m%d}", "last": f"{window.end:%Y%m%d}"}
    try:
        rows = bq.run(client, sql, params)
        version = []
        for row in rows:
            fields = dict(row.items())
            modified = fields.get("last_modified_time")
            version.append([fields["partition_id"], int(fields.get("total_rows") or 0),
                            modified.isoformat() if isinstance(modified, dt.datetime) else modified])
    except (BadRequest, Forbidden, NotFound) as exc:  # not answerable here; transient errors raise
        log.warning("cannot read the partitions of %s (%s): the window will be read again by "
                    "predict_task", table, str(exc).splitlines()[0])
        return None
    return sorted(version)


@dataclasses.dataclass
class WindowInteractions:
    """Every user of the window x the training items: the whole window's summed weights."""

    users: IdMap
    items: IdMap
    matrix: Any  # scipy.sparse.csr_matrix, float32

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        m = self.matrix
        np.savez(buf, **self.users.to_arrays("user_ids"), **self.items.to_arrays("item_ids"), data=m.data,
                 indices=m.indices, indptr=m.indptr, shape=np.array(m.shape))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> WindowInteractions:
        import scipy.sparse as sp

        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            matrix = sp.csr_matrix((npz["data"], npz["indices"], npz["indptr"]),
                                   shape=tuple(npz["shape"]))
            return cls(users=IdMap.from_arrays(npz, "user_ids"), items=IdMap.from_arrays(npz, "item_ids"),
                       matrix=matrix)


def describe(uri: str, payload: bytes, table: str, window: DateRange, weights: dict[str, float],
             quality: dict[str, Any], version: list[list[Any]] | None) -> dict[str, Any]:
    """The manifest entry for a window file: what must still hold for it to be reused."""
    return {"uri": uri, "sha256": artifacts.sha256(payload), "bytes": len(payload),
            "source_table": table, "window": [window.start.isoformat(), window.end.isoformat()],
            "event_weights": weights, "quality": quality, "partitions": version}


def why_not_reuse(entry: dict[str, Any] | None, table: str, window: DateRange,
                  weights: dict[str, float], quality: dict[str, Any],
                  version: list[list[Any]] | None) -> str | None:
    """None when ``entry`` (from the run's manifest) describes the window as it is now; else
    the first difference, for the log."""
    if entry is None:
        return "the run's matrices have no window file"
    if version is None or entry.get("partitions") is None:
        return "the version of the window's partitions is unknown"
    expected = {"source_table": table, "window": [window.start.isoformat(), window.end.isoformat()],
                "event_weights": weights, "quality": quality, "partitions": version}
    for key, value in expected.items():
        if _normalised(entry.get(key)) != _normalised(value):
            return f"{key.replace('_', ' ')} changed since create_cf_matrices read the window"
    return None


def _normalised(value: Any) -> Any:
    """JSON round trip: tuples become lists and floats compare as they were stored."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))
