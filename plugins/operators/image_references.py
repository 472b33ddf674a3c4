"""Image references: parsing, the allowlist rule, and the immutable reference a run is pinned to.

A run names its image by tag (``.../trainer:prod``); ``resolve_image`` pins it once, and every
step runs the pinned reference, so a push during a run cannot mix images:

* ``vertex``: the registry digest, ``REPOSITORY@sha256:<manifest digest>`` (Artifact Registry's
  Docker API, the same request ``docker pull`` makes);
* ``docker``: the engine's image ID, ``sha256:<id>`` (a locally built image has no registry
  digest; Docker runs an image by its full ID);
* ``local``: ``<tag>@sha256:<fingerprint>`` of the trainer's sources and lock file (there is no
  image; the subprocess runs the checkout, and each step checks it still matches).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# The Docker reference grammar (distribution/reference): nothing else is an image reference, so
# no whitespace, newline, shell character or path trick ("trainer:dev/../x") gets past parse().
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*(?::[0-9]+)?"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
# Kept a string: `re` compiles and caches it at the first parse(), at run time; no DAG parse
# needs it.
REFERENCE = (rf"(?P<name>(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*)"
             r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
             r"(?:@(?P<digest>[^@]+))?")


class ImageRef(NamedTuple):  # immutable, and cheaper to define at each parse than a dataclass
    """``repository[:tag][@sha256:digest]``."""

    repository: str
    tag: str | None
    digest: str | None

    @classmethod
    def parse(cls, ref: str) -> ImageRef:
        found = re.fullmatch(REFERENCE, ref)
        if not found:
            raise ValueError(f"{ref!r} is not an image reference")
        digest = found.group("digest")
        if digest is not None and not DIGEST.fullmatch(digest):
            raise ValueError(f"{ref!r}: a digest must be sha256: and 64 lowercase hex digits")
        return cls(found.group("name"), found.group("tag"), digest)

    @property
    def registry(self) -> str:
        first = self.repository.split("/", 1)[0]
        return first if "/" in self.repository and ("." in first or ":" in first or first == "localhost") \
            else "docker.io"

    @property
    def path(self) -> str:
        """The repository without its registry host."""
        return self.repository.split("/", 1)[1] if self.registry != "docker.io" else self.repository

    def pinned(self, digest: str) -> str:
        return f"{self.repository}@{digest}"


def is_allowed(ref: str, allowlist: Sequence[str]) -> bool:
    """Whether an allowlist entry names the reference's repository (any tag or digest of it):

    * ``REPO:`` the repository ``REPO`` exactly (``recsys-trainer:`` allows
      ``recsys-trainer:dev`` and ``recsys-trainer@sha256:…``, never ``recsys-trainer:5000/…``,
      a registry host of that name, nor ``recsys-trainer-evil``);
    * ``PATH/`` every repository under that path, on that path's registry;
    * ``REPO@`` the repository ``REPO``, pinned by digest only.

    Compared on the parsed repository, never on the raw string: a string prefix cannot tell a
    tag's ``:`` from a port's. A bare image ID names no repository, so no entry allows it."""
    try:
        parsed = ImageRef.parse(ref)
    except ValueError:
        return False
    for entry in allowlist:
        if entry.endswith(":") and parsed.repository == entry[:-1]:
            return True
        if entry.endswith("/") and parsed.repository.startswith(entry):
            return True
        if entry.endswith("@") and parsed.repository == entry[:-1] and parsed.digest is not None:
            return True
    return False


def trainer_fingerprint(source: Path) -> str:
    """``sha256:`` of what the local runtime runs: the trainer's lock file and its sources."""
    files = [source / "requirements.lock", source / "pyproject.toml",
             *sorted((source / "trainer").rglob("*.py"))]
    missing = [str(f) for f in files[:2] if not f.is_file()]
    if missing or not (source / "trainer").is_dir():
        raise FileNotFoundError(f"trainer sources not found at {source} "
                                f"(missing {', '.join(missing) or 'trainer/'})")
    digest = hashlib.sha256()
    for f in files:
        digest.update(str(f.relative_to(source)).encode() + b"\0" + f.read_bytes() + b"\0")
    return "sha256:" + digest.hexdigest()
