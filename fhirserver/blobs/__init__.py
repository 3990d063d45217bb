"""Blob stores: named byte streams (export files today; DICOM instances and Binary content may
move here), behind one small interface so a deployment can swap the local data folder for an
object store without the callers knowing.

Keys are relative paths of safe segments (`exports/<id>/Patient-1.ndjson`); a put is atomic
(readers see the whole blob or none) and streamed (memory stays flat whatever the size).
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Protocol

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


class BlobStore(Protocol):
    def put(self, key: str, chunks: Iterable[bytes]) -> int:
        """Store the chunks under `key` (replacing it) and return the size in bytes."""

    def open(self, key: str) -> BinaryIO:
        """The blob for reading (raises FileNotFoundError)."""

    def stream(self, key: str, chunk_size: int = 256 * 1024) -> Iterator[bytes]:
        """The blob in chunks (raises FileNotFoundError before the first one)."""

    def delete(self, key: str) -> None:
        """Remove `key`, or every blob under it when it names a folder; absent keys are fine."""


def _check(key: str) -> list[str]:
    parts = key.split("/")
    if not parts or not all(_SEGMENT.match(p) for p in parts):
        raise ValueError(f"not a blob key: {key!r}")
    return parts


class LocalBlobStore:
    """Blobs as files under one folder (the data folder by default)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root.joinpath(*_check(key))

    def put(self, key: str, chunks: Iterable[bytes]) -> int:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".put-", dir=target.parent)
        size = 0
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:
                    f.write(chunk)
                    size += len(chunk)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return size

    def open(self, key: str) -> BinaryIO:
        return open(self.path(key), "rb")

    def stream(self, key: str, chunk_size: int = 256 * 1024) -> Iterator[bytes]:
        f = self.open(key)

        def chunks() -> Iterator[bytes]:
            with f:
                while True:
                    block = f.read(chunk_size)
                    if not block:
                        return
                    yield block
        return chunks()

    def delete(self, key: str) -> None:
        p = self.path(key)
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


__all__ = ["BlobStore", "LocalBlobStore"]
