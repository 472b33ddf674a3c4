"""Read and write artifacts under a root that is either ``gs://bucket/prefix`` or a local path.

Layout under the root::

    runs/<run_date>/matrices.npz        CSR matrices + id maps of one run
    runs/<run_date>/manifest.json       window, counts, checksum of matrices.npz
    runs/<run_date>/candidate.json      which model train_task produced for that run
    models/<model_id>/model.npz         factors + id maps
    models/<model_id>/model.json        parameters and training metadata
    models/<model_id>/evaluation.json   metrics and verdict (evaluate_task)
    <LATEST_POINTER>                    pointer to the published model (promote_model_task)

(The run folders, model folders and the pointer are the Airflow side's contract too:
:mod:`trainer.contract` defines them, ``LATEST_POINTER`` included; :mod:`trainer.storage.layout`
adds the files within.)

Objects are written whole (never appended), so a reader sees either the old or the new
version. The pointer is replaced with a generation precondition (compare-and-swap).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trainer import contract
from trainer.core.errors import ConcurrentUpdateError, TrainerError, TransientError


def sha256(data: bytes) -> str:
    """Hex SHA-256 of an artifact's bytes (recorded beside it, checked when it is read)."""
    return hashlib.sha256(data).hexdigest()


def md5_b64(data: bytes) -> str:
    """MD5 as Cloud Storage reports it (``md5Hash``: base64 of the digest)."""
    return base64.b64encode(hashlib.md5(data).digest()).decode()


join = contract.join  # URI parts joined with '/' (also for local paths): one rule for both sides


def _split_gs(uri: str) -> tuple[str, str]:
    bucket, _, name = uri[len("gs://"):].partition("/")
    if not bucket or not name:
        raise TrainerError(f"invalid Cloud Storage URI {uri!r}: expected gs://bucket/path")
    return bucket, name


def _content_generation(data: bytes) -> int:
    """Local stand-in for a GCS generation: file timestamps are too coarse to tell two quick
    writes apart, the content is not (pointer records carry a timestamp, so they differ)."""
    return int(hashlib.sha256(data).hexdigest()[:15], 16)


@contextlib.contextmanager
def _naming_endpoint(uri: str) -> Iterator[None]:
    """Cloud Storage unavailable (5xx, connection refused or dropped, retries run out): a
    transient error naming the endpoint and the object. Answers about the object itself (not
    found, precondition failed, forbidden) pass through unchanged."""
    from google.api_core import exceptions as gexc

    try:
        yield
    except (gexc.RetryError, gexc.ServerError, ConnectionError, TimeoutError) as exc:
        raise StorageUnavailableError(exc, uri) from exc
    except Exception as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        transport = type(exc).__module__.startswith(("requests", "urllib3", "google.auth"))
        if (isinstance(status, int) and status >= 500) or transport:
            raise StorageUnavailableError(exc, uri) from exc
        raise


def gcs_retry():
    """The trainer's Cloud Storage retry (imported when first used: the client is heavy)."""
    from trainer.storage.clients import gcs_retry as retry

    return retry()


class DiskFullError(TransientError):
    """The local file system is full (or the file too large for it): the write left nothing."""


class StorageUnavailableError(TransientError):
    """Cloud Storage did not answer (or answered 5xx) within the retry deadline."""

    def __init__(self, exc: BaseException, uri: str) -> None:
        from trainer.storage.clients import gcs_endpoint

        detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        super().__init__(f"Cloud Storage at {gcs_endpoint()} unavailable for {uri}: "
                         f"{type(exc).__name__}: {detail}")


def is_gcs(uri: str) -> bool:
    return uri.startswith("gs://")


@dataclasses.dataclass
class Versioned:
    """An object's content and its generation (None = the object does not exist)."""

    data: bytes | None
    generation: int | None


class ArtifactStore:
    """Whole-object reads and writes on Cloud Storage or the local filesystem."""

    def __init__(self, project: str | None = None) -> None:
        self._project = project
        self._gcs = None

    def _bucket(self, uri: str):
        if self._gcs is None:
            from trainer.storage.clients import storage_client

            self._gcs = storage_client(self._project or "")
        bucket_name, name = _split_gs(uri)
        return self._gcs.bucket(bucket_name), name

    def bucket_and_name(self, uri: str):
        """The Cloud Storage bucket of ``uri`` and the object name in it."""
        return self._bucket(uri)

    def _bucket_blob(self, uri: str):
        bucket, name = self._bucket(uri)
        return bucket.blob(name)

    def exists(self, uri: str) -> bool:
        if is_gcs(uri):
            with _naming_endpoint(uri):
                return self._bucket_blob(uri).exists(retry=gcs_retry())
        return Path(uri).exists()

    def read_bytes(self, uri: str) -> bytes:
        """Read a whole object; a missing one raises FileNotFoundError naming the URI."""
        if is_gcs(uri):
            from google.api_core.exceptions import NotFound

            try:
                with _naming_endpoint(uri):
                    return self._bucket_blob(uri).download_as_bytes(retry=gcs_retry())
            except NotFound:
                raise FileNotFoundError(uri) from None
        try:
            return Path(uri).read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(uri) from None

    def write_bytes(self, uri: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Write a whole object atomically (readers never see a partial file)."""
        if is_gcs(uri):
            with _naming_endpoint(uri):
                self._bucket_blob(uri).upload_from_string(data, content_type=content_type, retry=gcs_retry())
            return
        path = Path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                # Nothing was replaced: the previous file, if any, is still whole.
                raise DiskFullError(f"no space left to write {uri} ({len(data):,} bytes): "
                                    f"{os.strerror(exc.errno)}") from exc
            raise

    def list_names(self, prefix_uri: str) -> list[str]:
        """Names of the objects directly under the folder ``prefix_uri`` (sorted; [] if none)."""
        if is_gcs(prefix_uri):
            bucket, name = self._bucket(prefix_uri.rstrip("/") + "/")
            with _naming_endpoint(prefix_uri):
                blobs = bucket.client.list_blobs(bucket, prefix=name, delimiter="/", retry=gcs_retry())
                return sorted(blob.name[len(name):] for blob in blobs)
        folder = Path(prefix_uri)
        return sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []

    def read_json(self, uri: str) -> Any:
        return json.loads(self.read_bytes(uri))

    def matches(self, uri: str, sha256_hex: str, md5_b64: str | None = None) -> bool:
        """Whether the object holds exactly the bytes these checksums were taken of. On Cloud
        Storage the object's own MD5 (computed by the service when it stored the object) is
        compared, without downloading it, where one is recorded; else the bytes are hashed.
        A missing object raises FileNotFoundError."""
        if is_gcs(uri) and md5_b64:
            bucket, name = self._bucket(uri)
            with _naming_endpoint(uri):
                blob = bucket.get_blob(name, retry=gcs_retry())
            if blob is None:
                raise FileNotFoundError(uri)
            if blob.md5_hash:
                return blob.md5_hash == md5_b64
        return sha256(self.read_bytes(uri)) == sha256_hex

    def write_json(self, uri: str, obj: Any) -> None:
        data = json.dumps(obj, indent=2, sort_keys=True, default=str).encode()
        self.write_bytes(uri, data, content_type="application/json")

    def read_versioned(self, uri: str) -> Versioned:
        """Read an object together with its generation, for a later compare-and-swap."""
        if is_gcs(uri):
            bucket, name = self._bucket(uri)
            with _naming_endpoint(uri):
                blob = bucket.get_blob(name, retry=gcs_retry())
                if blob is None:
                    return Versioned(None, None)
                data = blob.download_as_bytes(if_generation_match=blob.generation, retry=gcs_retry())
            return Versioned(data, int(blob.generation))
        try:
            data = Path(uri).read_bytes()
        except FileNotFoundError:
            return Versioned(None, None)
        return Versioned(data, _content_generation(data))

    def compare_and_swap(self, uri: str, data: bytes, expected_generation: int | None) -> None:
        """Replace ``uri`` only if it still has ``expected_generation`` (None: must not exist)."""
        if is_gcs(uri):
            from google.api_core.exceptions import PreconditionFailed

            blob = self._bucket_blob(uri)
            try:
                with _naming_endpoint(uri):
                    blob.upload_from_string(
                        data, content_type="application/json",
                        if_generation_match=expected_generation or 0, retry=gcs_retry(),
                    )
            except PreconditionFailed:
                raise ConcurrentUpdateError(
                    f"{uri} was changed by another writer since it was read; re-run to retry"
                ) from None
            return
        path = Path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        # The lock file serialises local writers; the content hash is the generation.
        with open(path.with_name(path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                current = _content_generation(path.read_bytes())
            except FileNotFoundError:
                current = None
            if current != expected_generation:
                raise ConcurrentUpdateError(
                    f"{uri} was changed by another writer since it was read; re-run to retry"
                )
            self.write_bytes(uri, data)
