"""Content-addressed instance store: bytes in, a key (SHA-256 of the bytes) out.

The node only uses the `InstanceStore` interface, so an S3-compatible object store can replace
the file store. Writes go to a temporary file in the same folder and are renamed into place, so a
reader (or a crash) never sees a partial object; storing the same bytes twice is a no-op.
"""
from __future__ import annotations

import hashlib
import itertools
import os
import threading
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
        self._seq = itertools.count()
        self._dirs: set[str] = set()  # object folders known to exist
        self._tmp_prefix = f"{self.tmp}{os.sep}"
        self._objects_prefix = f"{self.objects}{os.sep}"

    def _path(self, key: str) -> Path:
        if len(key) != 64 or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"not a storage key: {key!r}")
        return self.objects / key[:2] / key[2:4] / key

    def put(self, chunks: Iterable[bytes]) -> tuple[str, int]:
        parts = [memoryview(c) for c in chunks]
        size = sum(p.nbytes for p in parts)
        tmp_name = f"{self._tmp_prefix}{os.getpid()}-{threading.get_ident()}-{next(self._seq)}.part"
        digest = hashlib.sha256()
        try:
            fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
            with open(fd, "wb", buffering=0, closefd=True) as f:
                for view in parts:  # hash while writing; the received buffer is never copied
                    digest.update(view)
                    while view:
                        view = view[f.write(view):]
            key = digest.hexdigest()
            folder = f"{self._objects_prefix}{key[:2]}{os.sep}{key[2:4]}"  # key: a fresh hex digest
            final = f"{folder}{os.sep}{key}"
            if key[:4] not in self._dirs:
                os.makedirs(folder, exist_ok=True)
                self._dirs.add(key[:4])
            if os.path.exists(final):
                os.unlink(tmp_name)
            else:
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
