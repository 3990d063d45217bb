"""The blob store contract, run against both implementations: the local data folder and an
S3-compatible store (a real moto server over HTTP). Same bytes give the same key and one object;
reads stream in chunks and ranges; missing keys are FileNotFoundError; a store that is down is
BlobStoreUnavailable (an OSError), never the client library's own exception."""
from __future__ import annotations

import hashlib
import os
import threading

import pytest

from fhirserver.blobs import BlobStoreUnavailable, LocalBlobStore, open_store
from fhirserver.blobs.s3 import MULTIPART_BYTES, S3BlobStore
from fhirserver.config import Settings
from tests.conftest import free_port
from tests.s3_server import MotoS3


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):  # noqa: ANN001, ANN201
    if request.param == "local":
        return open_store(Settings(data_dir=tmp_path))
    return open_store(Settings(data_dir=tmp_path, blob_url=request.getfixturevalue("s3_blob_url")))


def test_open_store_follows_the_setting(tmp_path, s3_blob_url):  # noqa: ANN001
    local = open_store(Settings(data_dir=tmp_path))
    assert isinstance(local, LocalBlobStore) and local.root == tmp_path / "dicom"  # the old layout
    assert isinstance(open_store(Settings(data_dir=tmp_path, blob_url=s3_blob_url)), S3BlobStore)
    with pytest.raises(ValueError):
        open_store(Settings(data_dir=tmp_path, blob_url="ftp://nowhere/x"))
    with pytest.raises(ValueError):
        open_store(Settings(data_dir=tmp_path, blob_url="s3://bucket/p?secret=x"))


def test_put_is_content_addressed_and_idempotent(store):  # noqa: ANN001
    key, size = store.put([b"DICM", memoryview(b" one instance")])
    assert key == hashlib.sha256(b"DICM one instance").hexdigest() and size == 17
    assert store.put([b"DICM one instance"]) == (key, size)          # same bytes, same key
    assert store.put(iter([b"DICM one", b" instance"])) == (key, size)  # streamed the same
    assert list(store.keys()) == [key]                                # written once
    other, _ = store.put([b"another"])
    assert other != key and sorted(store.keys()) == sorted([key, other])


def test_stream_open_and_ranges(store):  # noqa: ANN001
    data = os.urandom(3 * 1024 * 1024 + 17)
    key, size = store.put([data])
    assert size == len(data) and store.size(key) == len(data) and store.exists(key)
    chunks = list(store.stream(key, chunk_size=1024 * 1024))
    assert b"".join(chunks) == data and len(chunks) >= 2  # chunked, not one whole read
    assert b"".join(store.stream(key, 10, 1000)) == data[10:1000]
    assert b"".join(store.stream(key, len(data) - 5)) == data[-5:]
    with store.open(key) as f:  # seekable, as pydicom needs
        f.seek(1_000_000)
        assert f.read(100) == data[1_000_000:1_000_100]
        f.seek(0)
        assert f.read() == data


def test_large_streamed_put_is_multipart_and_whole(store):  # noqa: ANN001
    block = os.urandom(1024 * 1024)
    n = MULTIPART_BYTES // len(block) + 3  # past the multipart threshold

    def chunks():  # noqa: ANN202 - a generator: never all in memory at once
        for i in range(n):
            yield block[:-1] + bytes([i])
    key, size = store.put(chunks())
    assert size == n * len(block)
    digest = hashlib.sha256()
    for c in store.stream(key):
        digest.update(c)
    assert digest.hexdigest() == key


def test_missing_and_deleted_keys(store):  # noqa: ANN001
    missing = "0" * 64
    assert not store.exists(missing)
    with pytest.raises(FileNotFoundError):
        store.stream(missing)  # raised by the call, before any chunk: the caller can answer 404
    with pytest.raises(FileNotFoundError):
        store.open(missing)
    with pytest.raises(FileNotFoundError):
        store.size(missing)
    key, _ = store.put([b"to delete"])
    store.delete(key)
    store.delete(key)  # absent: fine
    assert not store.exists(key) and list(store.keys()) == []
    with pytest.raises(ValueError):
        store.exists("../../etc/passwd")


def test_concurrent_puts_of_the_same_bytes(store):  # noqa: ANN001
    data = os.urandom(600 * 1024)
    results: list[tuple[str, int]] = []
    errors: list[BaseException] = []

    def put() -> None:
        try:
            results.append(store.put([data]))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
    threads = [threading.Thread(target=put) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1 and len(results) == 8
    key = results[0][0]
    assert list(store.keys()) == [key] and b"".join(store.stream(key)) == data


def test_readiness_check(store):  # noqa: ANN001
    assert store.check() == "ok"


def test_object_store_down_is_blob_store_unavailable():
    server = MotoS3(free_port()).start()
    store = open_store(Settings(blob_url=server.bucket()))
    key, _ = store.put([b"kept"])
    server.stop()
    for call in (lambda: store.put([b"new"]), lambda: store.stream(key), lambda: store.exists(key),
                 lambda: store.check(), lambda: store.delete(key)):
        with pytest.raises(BlobStoreUnavailable):
            call()
    assert issubclass(BlobStoreUnavailable, OSError)  # the receivers' "cannot write" path
