"""Prometheus metrics shared by every entry point (HTTP workers, the DICOM node processes).

`serve` runs several gunicorn workers and DICOM receiver processes; a scrape lands on one of
them. prometheus-client's multiprocess mode makes each process write its values to files in one
folder (`PROMETHEUS_MULTIPROC_DIR`, chosen by `serve` under the data folder before anything
forks), and `/metrics` adds up every process's files. Without that variable (tests, one process)
the values live in this process's memory.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable

# Not a setting of ours: prometheus_client reads this variable itself (at its first value, in every
# process `serve` forks or starts) to choose multiprocess mode, so `serve` writes it and the code
# that must agree with the library (scrapes, dead-worker cleanup) reads it, never Settings.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Latencies of a FHIR server: sub-millisecond reads up to multi-second bundles and exports.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclasses.dataclass(frozen=True)
class Metrics:
    """The server's instruments; one set per process (see `metrics`)."""

    registry: Any
    http_requests: Any       # Counter(method, route, status)
    http_latency: Any        # Histogram(method, route)
    db_pool_size: Any        # Gauge: configured pool size (livesum over processes)
    db_pool_open: Any        # Gauge: connections open
    db_pool_checked_out: Any  # Gauge: connections in use
    dicom_associations: Any  # Counter(result): accepted / rejected / aborted
    dicom_instances: Any     # Counter(status): stored / failed


@functools.cache
def metrics() -> Metrics:
    """The process's metrics, built on first use (never at import: the multiprocess folder must be
    in the environment before the first value is created). Cached because Prometheus counters are
    per process by nature: a second set would count the same requests twice."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    reg = CollectorRegistry(auto_describe=True)
    return Metrics(
        registry=reg,
        http_requests=Counter("fhirserver_http_requests", "HTTP requests answered",
                              ["method", "route", "status"], registry=reg),
        http_latency=Histogram("fhirserver_http_request_duration_seconds", "HTTP request latency",
                               ["method", "route"], buckets=LATENCY_BUCKETS, registry=reg),
        db_pool_size=Gauge("fhirserver_db_pool_size", "Configured database pool size (all processes)",
                           registry=reg, multiprocess_mode="livesum"),
        db_pool_open=Gauge("fhirserver_db_pool_connections", "Database connections open",
                           registry=reg, multiprocess_mode="livesum"),
        db_pool_checked_out=Gauge("fhirserver_db_pool_checked_out", "Database connections in use",
                                  registry=reg, multiprocess_mode="livesum"),
        dicom_associations=Counter("fhirserver_dicom_associations", "DICOM associations by outcome",
                                   ["result"], registry=reg),
        dicom_instances=Counter("fhirserver_dicom_instances", "DICOM instances received by outcome",
                                ["status"], registry=reg),
    )


def count_dicom_association(result: str) -> None:
    """One DICOM association ended: `accepted`, `rejected` or `aborted`."""
    metrics().dicom_associations.labels(result).inc()


def count_dicom_instance(stored: bool) -> None:
    """One C-STORE answered: stored, or failed (any failure status)."""
    metrics().dicom_instances.labels("stored" if stored else "failed").inc()


def watch_pool(engine: Any) -> None:
    """Follow an engine's pool through SQLAlchemy pool events (no work per query, two gauge
    updates per checkout/checkin)."""
    from sqlalchemy import event

    m = metrics()
    size = getattr(engine.pool, "size", None)
    if callable(size):
        m.db_pool_size.inc(size())
    for already in ("checkedin", "checkedout"):  # connections opened before we listened (migrations)
        count = getattr(engine.pool, already, None)
        if callable(count):
            m.db_pool_open.inc(count())
    if callable(getattr(engine.pool, "checkedout", None)):
        m.db_pool_checked_out.inc(engine.pool.checkedout())
    event.listen(engine, "connect", lambda *_: m.db_pool_open.inc())
    event.listen(engine, "close", lambda *_: m.db_pool_open.dec())
    event.listen(engine, "close_detached", lambda *_: m.db_pool_open.dec())
    event.listen(engine, "checkout", lambda *_: m.db_pool_checked_out.inc())
    event.listen(engine, "checkin", lambda *_: m.db_pool_checked_out.dec())


def prepare_multiprocess_dir(data_dir: Path | str) -> Path:
    """`serve`, before anything forks: an empty folder for every process's metric files (values
    of an earlier run would otherwise be added to this one's), named in the environment so the
    workers and the DICOM node processes inherit it."""
    path = Path(data_dir).resolve() / "metrics"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_ENV] = str(path)
    return path


def process_exited(pid: int) -> None:
    """gunicorn `child_exit`: drop a dead worker's live gauges (its pool is gone)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def exposition(extra: Iterable[Callable[[], Iterable[Any]]] = ()) -> tuple[bytes, str]:
    """The text to answer a scrape with: every process's values (multiprocess mode) or this
    process's, plus `extra` collectors computed now (values that live in the database)."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    metrics()  # this process's instruments exist even before its first request
    folder = os.environ.get(MULTIPROC_ENV)
    if folder:
        from prometheus_client import multiprocess

        reg = CollectorRegistry()
        multiprocess.MultiProcessCollector(reg, path=folder)
    else:
        reg = CollectorRegistry()
        reg.register(_Delegate(metrics().registry.collect))
    for collect in extra:
        reg.register(_Delegate(collect))
    return generate_latest(reg), CONTENT_TYPE_LATEST


class _Delegate:
    """A collector object around a collect function (the registry wants `.collect()`)."""

    def __init__(self, collect: Callable[[], Iterable[Any]]) -> None:
        self._collect = collect

    def collect(self) -> Iterable[Any]:
        return self._collect()
