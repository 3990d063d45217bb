"""The local blob store: content-addressed files in one folder (the default, embedded store).

Objects live at ROOT/objects/ab/cd/<sha256> and are written through a temporary file under
ROOT/tmp renamed into place, so a reader (or a crash) never sees a partial object, and storing
the same bytes twice writes nothing new. The layout is the DICOM file store's of earlier
releases: existing data folders are read as they are (and can be copied as they are into an
object store under `<prefix>/objects/`).
"""
from __future__ import annotations

import hashlib
import itertools
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator

_HEX = frozenset("0123456789abcdef")


def write_probe(folder: Path) -> None:
    """Write and remove a small file in `folder`: the readiness checks' proof that it takes a
    write (a full disk or a read-only mount raises OSError here, not in the next request)."""
    fd, name = tempfile.mkstemp(prefix=".readyz-", dir=folder)
    try:
        os.write(fd, b"ok")
    finally:
        os.close(fd)
        os.unlink(name)


class LocalBlobStore:
    """Objects at ROOT/objects/ab/cd/<sha256>, temporary files under ROOT/tmp."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.objects = self.root / "objects"
        self.tmp = self.root / "tmp"
        self._seq = itertools.count()
        self._dirs: set[str] = set()  # object folders known to exist
        self._tmp_prefix = f"{self.tmp}{os.sep}"
        self._objects_prefix = f"{self.objects}{os.sep}"

    def __repr__(self) -> str:
        return f"LocalBlobStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        if len(key) != 64 or not _HEX.issuperset(key):
            raise ValueError(f"not a storage key: {key!r}")
        return self.objects / key[:2] / key[2:4] / key

    def put(self, chunks: Iterable[Any]) -> tuple[str, int]:
        if "tmp" not in self._dirs:  # made on first use: building the services writes nothing
            self.tmp.mkdir(parents=True, exist_ok=True)
            self._dirs.add("tmp")
        tmp_name = f"{self._tmp_prefix}{os.getpid()}-{threading.get_ident()}-{next(self._seq)}.part"
        digest = hashlib.sha256()
        size = 0
        try:
            fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
            with open(fd, "wb", buffering=0, closefd=True) as f:
                for chunk in chunks:  # hash while writing; a received buffer is never copied
                    view = memoryview(chunk)
                    digest.update(view)
                    size += view.nbytes
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

    def stream(self, key: str, start: int = 0, end: int | None = None,
               chunk_size: int = 1 << 20) -> Iterator[bytes]:
        f = self.open(key)  # FileNotFoundError now, not at the first chunk
        if start:
            f.seek(start)

        def chunks() -> Iterator[bytes]:
            left = None if end is None else max(0, end - start)
            with f:
                while left is None or left > 0:
                    block = f.read(chunk_size if left is None else min(chunk_size, left))
                    if not block:
                        return
                    if left is not None:
                        left -= len(block)
                    yield block
        return chunks()

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

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

    def check(self) -> str:
        """Write and remove a file where objects are written (the folder made if missing)."""
        self.tmp.mkdir(parents=True, exist_ok=True)
        write_probe(self.tmp)
        return "ok"
