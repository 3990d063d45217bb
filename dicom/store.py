"""Content-addressed instance store: bytes in, a key (SHA-256 of the bytes) out.

The node only uses the `InstanceStore` interface, so an S3-compatible object store can replace
the file store. Writes go to a temporary file in the same folder and are renamed into place, so a
reader (or a crash) never sees a partial object; storing the same bytes twice is a no-op.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterable, Protocol


class InstanceStore(Protocol):
    def put(self, chunks: Iterable[bytes]) -> tuple[str, int]:
        """Store the concatenated chunks; return (key, size)."""

    def open(self, key: str) -> BinaryIO:
        """A readable binary file for the key (FileNotFoundError if absent)."""

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def local_path(self, key: str) -> Path | None:
        """A filesystem path to the object when the store has one (for zero-copy sends)."""


class FileStore:
    """Objects at ROOT/objects/ab/cd/<sha256>, temporary files under ROOT/tmp."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.objects = self.root / "objects"
        self.tmp = self.root / "tmp"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        if len(key) != 64 or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"not a storage key: {key!r}")
        return self.objects / key[:2] / key[2:4] / key

    def put(self, chunks: Iterable[bytes]) -> tuple[str, int]:
        digest = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp, suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:
                    digest.update(chunk)
                    f.write(chunk)
                    size += len(chunk)
            key = digest.hexdigest()
            final = self._path(key)
            if final.exists():
                os.unlink(tmp_name)
            else:
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp_name, final)
            return key, size
        except BaseException:
            try:
                os.unlink(tmp_name)
            except FileNotFoundError:
                pass
            raise

    def open(self, key: str) -> BinaryIO:
        return open(self._path(key), "rb")

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            pass

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def keys(self) -> list[str]:
        return [p.name for p in self.objects.glob("*/*/*") if p.is_file()]


def file_store(data_dir: Path | str) -> FileStore:
    return FileStore(Path(data_dir) / "dicom")
