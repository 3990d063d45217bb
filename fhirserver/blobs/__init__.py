"""Blob stores: the bytes of DICOM instances and export files, content-addressed (the key is the
SHA-256 of the bytes), behind one small interface so a deployment can swap the local data folder
for an S3-compatible object store without the callers knowing.

Puts are idempotent (the same bytes give the same key and are written once), atomic (a reader
sees the whole blob or none) and streamed (memory stays flat whatever the size); a put returns
only once the bytes are durable, so a caller may index them right after. Every failure of the
store itself is a `BlobStoreUnavailable` (an OSError), never a library's own exception.

Binary resources and patients' uploads keep their bytes in the resource row (the database), not
here.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator, Protocol

from fhirserver.blobs.errors import BlobStoreUnavailable
from fhirserver.blobs.local import LocalBlobStore, write_probe

_KEY = re.compile(r"^[0-9a-f]{64}$")


class BlobStore(Protocol):
    """What DICOM C-STORE/STOW/WADO/C-GET/C-MOVE, `$erase` and `$export` use."""

    def put(self, chunks: Iterable[Any]) -> tuple[str, int]:
        """Store the concatenated chunks (bytes-like); return (key, size) once durable."""

    def open(self, key: str) -> BinaryIO:
        """A seekable binary file for reading (FileNotFoundError if absent)."""

    def stream(self, key: str, start: int = 0, end: int | None = None,
               chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Bytes [start, end) in chunks; FileNotFoundError is raised by this call, before the
        first chunk, so a caller can still answer 404."""

    def size(self, key: str) -> int:
        """The blob's size in bytes (FileNotFoundError if absent)."""

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove the blob; an absent key is fine."""

    def keys(self) -> Iterable[str]:
        """Every stored key (start-up reconciliation of the local store)."""

    def local_path(self, key: str) -> Path | None:
        """A filesystem path to the blob when the store has one."""

    def check(self) -> str:
        """Readiness: raises unless the store takes a write; returns a short description."""


def is_key(key: str) -> bool:
    return bool(_KEY.match(key or ""))


def open_store(settings: Any) -> BlobStore:
    """The store `settings.blob_url` names: empty, the data folder (`<data_dir>/dicom`, the
    layout existing data folders have); `s3://bucket/prefix?endpoint=...`, an object store."""
    url = (getattr(settings, "blob_url", "") or "").strip()
    if not url:
        return LocalBlobStore(Path(settings.data_dir) / "dicom")
    if url.startswith("s3://"):
        from fhirserver.blobs.s3 import S3BlobStore  # the client library only when configured

        return S3BlobStore.from_url(url)
    if url.startswith("file://"):
        return LocalBlobStore(Path(url[len("file://"):]))
    raise ValueError(f"blob URL {url!r}: use s3://bucket/prefix?endpoint=... or file:///folder (or leave it empty)")


__all__ = ["BlobStore", "BlobStoreUnavailable", "LocalBlobStore", "is_key", "open_store", "write_probe"]
