"""The S3-compatible blob store (AWS S3, MinIO, Ceph RGW...) through obstore.

obstore was chosen by measurement against a local moto server (puts of 512 KiB objects, the
size of a typical DICOM instance, about 2-3x boto3's and minio's rate; see bench/README.md).

URL: `s3://bucket/prefix?endpoint=http://host:9000&region=eu-west-1`. Credentials come the
standard way (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION or
AWS_DEFAULT_REGION, instance metadata: obstore reads them itself), never from the URL. Objects live at
`<prefix>/objects/ab/cd/<sha256>`, the local store's layout.

A put hashes first, asks whether the key exists (then writes nothing: idempotent, and the same
bytes sent by two hosts at once are written at most twice with equal content), and returns once
the object store answered the PUT (or completed the multipart upload): durable. Inputs that are
not already in memory are spooled to a temporary file while hashed (the key must be known before
the upload) and sent as a multipart upload, so memory stays flat.
"""
from __future__ import annotations

import hashlib
import io
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator, TypeVar
from urllib.parse import parse_qs, urlsplit

import obstore
from obstore.exceptions import NotFoundError
from obstore.store import S3Store

from fhirserver.blobs.errors import BlobStoreUnavailable

T = TypeVar("T")
MULTIPART_BYTES = 8 * 1024 * 1024   # above this a put is a multipart upload (and spooled to disk)
_HEX = frozenset("0123456789abcdef")
_READYZ = b"fhirserver readiness probe\n"


def _call(what: str, fn: Callable[[], T]) -> T:
    """Run one store call: a missing object is FileNotFoundError, any other failure of the store
    (connection refused, timeout, 5xx, denied) a BlobStoreUnavailable."""
    try:
        return fn()
    except NotFoundError as exc:
        raise FileNotFoundError(what) from exc
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - the library's errors are many; callers see one
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise BlobStoreUnavailable(f"object store: {what}: {first}") from exc


class _Reader(io.RawIOBase):
    """obstore's buffered reader as a Python binary file (pydicom reads from it)."""

    def __init__(self, raw: Any, key: str) -> None:
        self._raw, self._key = raw, key
        self.name = key  # pydicom names its source

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = _call(f"read {self._key}", lambda: self._raw.read(len(b)))
        view = memoryview(data)
        n = view.nbytes
        memoryview(b).cast("B")[:n] = view
        return n

    def seek(self, offset: int, whence: int = 0) -> int:
        return _call(f"seek {self._key}", lambda: self._raw.seek(offset, whence))

    def tell(self) -> int:
        return self._raw.tell()

    def close(self) -> None:
        if not self.closed:
            try:
                self._raw.close()
            finally:
                super().close()


class S3BlobStore:
    """Blobs in one bucket under one prefix."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint: str = "", region: str = "",
                 timeout_seconds: float = 30.0) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint = endpoint
        options: dict[str, Any] = {"timeout": timedelta(seconds=timeout_seconds),
                                   "connect_timeout": timedelta(seconds=5)}
        kwargs: dict[str, Any] = {}
        if endpoint:
            kwargs["endpoint"] = endpoint
            options["allow_http"] = endpoint.startswith("http://")
        if region:  # else obstore reads AWS_REGION, then AWS_DEFAULT_REGION, itself (as the credentials)
            kwargs["region"] = region
        # a store that is down answers a C-STORE or a request within seconds, not minutes
        retry = {"max_retries": 2, "retry_timeout": timedelta(seconds=10),
                 "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=2),
                             "base": 2}}
        self._store = S3Store(bucket, client_options=options, retry_config=retry, **kwargs)

    @classmethod
    def from_url(cls, url: str) -> "S3BlobStore":
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"blob URL {url!r}: expected s3://bucket/prefix?endpoint=...")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(query) - {"endpoint", "region"}
        if unknown:
            raise ValueError(f"blob URL {url!r}: unknown parameter {', '.join(sorted(unknown))} "
                             "(endpoint and region are known; credentials come from AWS_* variables)")
        return cls(parts.netloc, parts.path, endpoint=query.get("endpoint", ""), region=query.get("region", ""))

    def __repr__(self) -> str:
        where = f" at {self.endpoint}" if self.endpoint else ""
        return f"S3BlobStore(s3://{self.bucket}/{self.prefix}{where})"

    def _path(self, key: str) -> str:
        if len(key) != 64 or not _HEX.issuperset(key):
            raise ValueError(f"not a storage key: {key!r}")
        rel = f"objects/{key[:2]}/{key[2:4]}/{key}"
        return f"{self.prefix}/{rel}" if self.prefix else rel

    # -- writes ------------------------------------------------------------------------------
    def put(self, chunks: Iterable[Any]) -> tuple[str, int]:
        if isinstance(chunks, (list, tuple)):  # already in memory (a received instance): no copy to disk
            views = [memoryview(c).cast("B") for c in chunks]
            digest = hashlib.sha256()
            for v in views:
                digest.update(v)
            size = sum(v.nbytes for v in views)
            key = digest.hexdigest()
            if size <= MULTIPART_BYTES:
                body: Any = views[0] if len(views) == 1 else b"".join(views)
                self._put_new(key, size, body, multipart=False)
            else:
                self._put_new(key, size, iter(views), multipart=True)
            return key, size
        with tempfile.SpooledTemporaryFile(max_size=MULTIPART_BYTES) as spool:
            digest = hashlib.sha256()
            size = 0
            for chunk in chunks:
                view = memoryview(chunk).cast("B")
                digest.update(view)
                spool.write(view)
                size += view.nbytes
            spool.seek(0)
            key = digest.hexdigest()
            if size <= MULTIPART_BYTES:
                self._put_new(key, size, spool.read(), multipart=False)
            else:
                self._put_new(key, size, _file_chunks(spool), multipart=True)
            return key, size

    def _put_new(self, key: str, size: int, body: Any, multipart: bool) -> None:
        if self.exists(key):
            return  # the same bytes are there: nothing to write
        path = self._path(key)
        _call(f"put {key}", lambda: obstore.put(self._store, path, body, use_multipart=multipart,
                                                chunk_size=MULTIPART_BYTES, max_concurrency=4))

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            _call(f"delete {key}", lambda: obstore.delete(self._store, path))
        except FileNotFoundError:
            pass

    # -- reads -------------------------------------------------------------------------------
    def open(self, key: str) -> BinaryIO:
        path = self._path(key)
        raw = _call(f"open {key}", lambda: obstore.open_reader(self._store, path, buffer_size=1 << 20))
        return io.BufferedReader(_Reader(raw, key), buffer_size=1 << 20)  # type: ignore[return-value]

    def stream(self, key: str, start: int = 0, end: int | None = None,
               chunk_size: int = 1 << 20) -> Iterator[bytes]:
        options: dict[str, Any] = {}
        if start or end is not None:
            options["range"] = {"offset": start} if end is None else (start, end)
        path = self._path(key)
        result = _call(f"get {key}", lambda: obstore.get(self._store, path, options=options or None))
        chunks = result.stream(min_chunk_size=chunk_size)

        def gen() -> Iterator[bytes]:
            it = iter(chunks)
            while True:
                block = _call(f"read {key}", lambda: next(it, None))
                if block is None:
                    return
                yield bytes(block)
        return gen()

    def size(self, key: str) -> int:
        path = self._path(key)
        return int(_call(f"head {key}", lambda: obstore.head(self._store, path))["size"])

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except FileNotFoundError:
            return False
        return True

    def local_path(self, key: str) -> Path | None:
        return None

    def keys(self) -> Iterator[str]:
        prefix = f"{self.prefix}/objects" if self.prefix else "objects"
        for batch in _call("list", lambda: obstore.list(self._store, prefix=prefix)):
            for meta in batch:
                name = str(meta["path"]).rsplit("/", 1)[-1]
                if len(name) == 64 and _HEX.issuperset(name):
                    yield name

    def check(self) -> str:
        """A small probe object written once (then only asked for), so a probe every few
        seconds costs one HEAD request."""
        self.put([_READYZ])
        return "ok"


def _file_chunks(f: BinaryIO, size: int = MULTIPART_BYTES) -> Iterator[bytes]:
    while True:
        block = f.read(size)
        if not block:
            return
        yield block
