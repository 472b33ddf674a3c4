"""Find a string anywhere the product can read it: every table and view of a BigQuery dataset
(every column of every row as text, REPEATED and RECORD ones included) and every object under an
artifacts root (``.npz`` arrays decompressed and decoded, JSON, HTML, any other bytes in UTF-8,
UTF-16 and UTF-32). Independent of the trainer's own erasure code: what a test of it checks with."""

from __future__ import annotations

import html
import io
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _text(value: Any) -> Iterator[str]:
    """Every scalar of a BigQuery value as text (lists and records walked)."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield str(key)
            yield from _text(inner)
    elif isinstance(value, list | tuple):
        for inner in value:
            yield from _text(inner)
    elif value is not None:
        yield str(value)


def tables_holding(client, project: str, dataset: str, needle: str) -> list[str]:
    """``table.column`` for each column of each table or view of the dataset where ``needle``
    occurs in some row; also the names of tables whose own name or description holds it."""
    found = []
    for item in client.list_tables(f"{project}.{dataset}"):
        table_id = f"{project}.{dataset}.{item.table_id}"
        table = client.get_table(table_id)
        if needle in item.table_id or needle in (table.description or ""):
            found.append(table_id)
        rows = client.query(f"SELECT * FROM `{table_id}`").result()
        columns = set()
        for row in rows:
            for column, value in row.items():
                if column not in columns and any(needle in text for text in _text(value)):
                    columns.add(column)
        found += sorted(f"{item.table_id}.{column}" for column in columns)
    return found


def _encodings(needle: str) -> list[bytes]:
    forms = {needle, html.escape(needle, quote=True)}
    return [form.encode(codec) for form in forms for codec in ("utf-8", "utf-16-le", "utf-32-le")]


def _in_npz(data: bytes, needle: str) -> list[str]:
    """The arrays of an ``.npz`` holding ``needle`` (decoded) or any encoding of it (raw)."""
    import numpy as np

    hits = []
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name in archive.namelist():
            raw = archive.read(name)
            array = np.load(io.BytesIO(raw), allow_pickle=False) if name.endswith(".npy") else None
            decoded = (array is not None and array.dtype.kind in "USO"
                       and any(needle in str(value) for value in array.ravel()))
            if decoded or any(form in raw for form in _encodings(needle)):
                hits.append(name)
    return hits


def holds(data: bytes, needle: str) -> list[str]:
    """Where in an object's bytes ``needle`` is: ``[""]`` for the object itself, the member
    names for an archive; empty when nowhere."""
    if data[:4] == b"PK\x03\x04":
        return _in_npz(data, needle)
    return [""] if any(form in data for form in _encodings(needle)) else []


def objects(artifacts_uri: str, project: str) -> Iterator[tuple[str, bytes]]:
    """(uri, bytes) of every object under a ``gs://`` (the emulator's) or local artifacts root."""
    if artifacts_uri.startswith("gs://"):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        bucket, _, prefix = artifacts_uri[len("gs://"):].partition("/")
        client = storage.Client(project=project, credentials=AnonymousCredentials(),
                                client_options={"api_endpoint": os.environ["STORAGE_EMULATOR_HOST"]})
        for blob in client.list_blobs(bucket, prefix=prefix.rstrip("/") + "/"):
            yield f"gs://{bucket}/{blob.name}", blob.download_as_bytes()
        return
    for path in sorted(Path(artifacts_uri).rglob("*")):
        if path.is_file():
            yield str(path), path.read_bytes()


def artifacts_holding(artifacts_uri: str, project: str, needle: str) -> list[str]:
    """``uri`` (or ``uri:member``) of every object under the root holding ``needle``; object
    names count too."""
    found = []
    for uri, data in objects(artifacts_uri, project):
        if needle in uri:
            found.append(uri)
        found += [f"{uri}:{member}" if member else uri for member in holds(data, needle)]
    return found
