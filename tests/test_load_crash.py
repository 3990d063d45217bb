"""kill -9 of `fhirserver load` at random points, then resume: every Bundle whole or absent after
each kill, and the resumed load ends with exactly the counts of a clean load (both modes).

Synthea bundles (tests/data/synthea) are all unconditional POSTs, so a clean load has one resource
per entry: the expected counts come straight from the files, and any Bundle sent twice shows as
extra resources. Each Bundle is recognised in the database by one identifier that occurs in no
other Synthea file. Half the kills come at a random moment after the first commit of the run,
half the instant a new commit is seen (around the commit/journal-write window).
"""
from __future__ import annotations

import collections
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import text

from fhirserver.load import Journal

SYNTHEA = Path(__file__).parent / "data" / "synthea"
_ALL = sorted(SYNTHEA.glob("*.json"))
# Bounded time: the hospital and practitioner bundles and the four smallest patients (610 entries).
FILES = sorted([p for p in _ALL if not p.name[0].isupper()]
               + sorted((p for p in _ALL if p.name[0].isupper()), key=lambda p: p.stat().st_size)[:4])
KILLS = 3

_MARKER_SQL = text(
    "SELECT count(DISTINCT r.pk) FROM resource r JOIN idx_token t ON t.res_pk = r.pk "
    "WHERE r.res_type = :type AND t.param = 'identifier' AND t.system = :system AND t.code = :value")


def _bundles() -> tuple[dict[str, collections.Counter], dict[str, tuple[str, str, str]]]:
    """Per file: resources by type, and one (type, system, value) found in no other Synthea file."""
    seen: collections.Counter = collections.Counter()
    content: dict[Path, list[dict]] = {}
    for path in _ALL:
        entries = json.loads(path.read_text())["entry"]
        content[path] = entries
        seen.update({(e["resource"]["resourceType"], i.get("system"), i.get("value"))
                     for e in entries for i in e["resource"].get("identifier", [])})
    counts, markers = {}, {}
    for path in FILES:
        counts[path.name] = collections.Counter(e["resource"]["resourceType"] for e in content[path])
        markers[path.name] = next(
            (e["resource"]["resourceType"], i["system"], i["value"]) for e in content[path]
            for i in e["resource"].get("identifier", []) if seen[(e["resource"]["resourceType"],
                                                                  i.get("system"), i.get("value"))] == 1)
    return counts, markers


COUNTS, MARKERS = _bundles()
EXPECTED = sum(COUNTS.values(), collections.Counter())


@pytest.fixture(autouse=True)
def no_journal(app):  # noqa: ANN001, ANN201
    with app.extensions["fhirserver"].repo.engine.begin() as conn:
        conn.execute(text("DELETE FROM load_journal"))
        conn.execute(text("DELETE FROM committed_batch"))


def snapshot(engine) -> tuple[collections.Counter, int, dict[str, int], int]:  # noqa: ANN001
    """(resources by type, history rows, marker count per file, committed batches), one snapshot."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            types = collections.Counter(dict(conn.execute(
                text("SELECT res_type, count(*) FROM resource WHERE res_type <> 'AuditEvent' "
                     "GROUP BY res_type")).all()))
            # (AuditEvents are the server's own trail, written by other writers of this process)
            history = conn.execute(text("SELECT count(*) FROM resource_history "
                                        "WHERE res_type <> 'AuditEvent'")).scalar_one()
            markers = {name: conn.execute(_MARKER_SQL, {"type": t, "system": s, "value": v}).scalar_one()
                       for name, (t, s, v) in MARKERS.items()}
            batches = conn.execute(text("SELECT count(*) FROM committed_batch")).scalar_one()
    return types, history, markers, batches


def assert_whole_or_absent(engine) -> set[str]:  # noqa: ANN001
    """Every file's resources are all there or none; nothing twice. Returns the files present."""
    types, history, markers, _ = snapshot(engine)
    assert set(markers.values()) <= {0, 1}, markers          # never two copies of a Bundle
    present = {name for name, n in markers.items() if n}
    assert types == sum((COUNTS[n] for n in present), collections.Counter()), (present, types)
    assert history == sum(types.values())                    # one version each: nothing rewritten
    return present


def _argv(database_url: str, url: str | None) -> list[str]:
    argv = ["load", *map(str, FILES), "--database-url", database_url, "--no-progress"]
    return argv + (["--url", url] if url else [])


class ForkedLoader:
    """The loader forked from this process (imports already done: a kill every second or so costs
    no interpreter start-up), killed with SIGKILL like any operator's shell command."""

    def __init__(self, database_url: str, data_dir: Path, url: str | None) -> None:
        self.log = data_dir / f"load-{time.monotonic_ns()}.log"
        self.returncode: int | None = None
        argv = _argv(database_url, url)
        self.pid = os.fork()
        if self.pid == 0:  # the child: run the loader, never return into pytest
            code = 70
            try:
                fd = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
                sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
                from fhirserver.cli import main

                code = main(argv)
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)  # no atexit, no finalizers: the parent's connections stay untouched

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def kill(self) -> None:
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
            self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def wait_for_commit(engine, proc: ForkedLoader, after: int, deadline: float) -> bool:  # noqa: ANN001
    """Poll until a batch beyond `after` is committed (True) or the loader has exited (False)."""
    while time.monotonic() < deadline:
        if snapshot_batches(engine) > after:
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    raise AssertionError("no commit within the time limit")


def snapshot_batches(engine) -> int:  # noqa: ANN001
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM committed_batch")).scalar_one()


def crash_and_resume(engine, database_url: str, data_dir: Path, url: str | None) -> None:  # noqa: ANN001
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    started = time.monotonic()
    deadline = started + 55
    partial_kills = 0
    for k in range(KILLS):
        loader = ForkedLoader(database_url, data_dir, url)
        try:
            if wait_for_commit(engine, loader, snapshot_batches(engine), deadline):
                if k % 2 == 0:
                    time.sleep(rng.uniform(0.0, 0.2))  # the whole subset loads in about a second
        finally:
            loader.kill()
        present = assert_whole_or_absent(engine)
        if loader.returncode != -signal.SIGKILL:   # it finished before the kill
            assert loader.returncode == 0, loader.output()
            break
        partial_kills += 0 < len(present) < len(FILES)
    # the resume: the real command, to its end
    final = subprocess.run([sys.executable, "-m", "fhirserver.cli", *_argv(database_url, url)],
                           env=dict(os.environ, FHIRSERVER_DATA_DIR=str(data_dir)), capture_output=True,
                           text=True, timeout=max(5.0, deadline - time.monotonic()))
    output = final.stdout + final.stderr
    assert final.returncode == 0, f"seed {seed}: " + output
    assert "0 errors" in output
    assert partial_kills >= 1, f"seed {seed}: no kill landed in the middle of the load"
    types, history, markers, _ = snapshot(engine)
    assert types == EXPECTED, f"seed {seed}"               # exactly a clean load
    assert history == sum(EXPECTED.values())
    assert set(markers.values()) == {1}
    target = f"url:{url.rstrip('/')}" if url else "database"
    files = Journal(engine, target).files()
    assert len(files) == len(FILES) and all(f.done for f in files.values())
    assert time.monotonic() - started < 60


@pytest.mark.slow
def test_kill_direct_load_and_resume(app, database_url, tmp_path):  # noqa: ANN001
    crash_and_resume(app.extensions["fhirserver"].repo.engine, database_url, tmp_path, None)


@pytest.mark.slow
def test_kill_url_load_and_resume(app, live_server, database_url, tmp_path):  # noqa: ANN001
    crash_and_resume(app.extensions["fhirserver"].repo.engine, database_url, tmp_path, live_server.base)


def _serve(database_url: str, data_dir: Path, port: int) -> subprocess.Popen:
    """`fhirserver serve` (2 workers) in its own process group, so kill -9 takes every process."""
    log = open(data_dir / f"server-{port}.log", "ab")  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen([sys.executable, "-m", "fhirserver.cli", "serve", "--port", str(port), "--workers", "2",
                             "--dicom-port", "0", "--insecure-no-auth"],
                            env=dict(os.environ, FHIRSERVER_DATABASE_URL=database_url,
                                     FHIRSERVER_DATA_DIR=str(data_dir)),
                            stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, (data_dir / f"server-{port}.log").read_text(errors="replace")[-2000:]
        try:
            if requests.get(f"http://127.0.0.1:{port}/fhir/metadata", timeout=5).status_code == 200:
                return proc
        except requests.RequestException:
            time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError("server did not start")


@pytest.mark.slow
def test_kill_the_whole_server_during_ingest_and_resume(app, database_url, tmp_path):  # noqa: ANN001
    """kill -9 of every server process while a load goes through it: each bundle is whole or
    absent, and a resume against the restarted server ends with exactly a clean load."""
    with socket.socket() as sock:  # a free loopback port (conftest modules shadow each other by name)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    engine = app.extensions["fhirserver"].repo.engine
    url = f"http://127.0.0.1:{port}/fhir"
    server = _serve(database_url, tmp_path, port)
    loader = ForkedLoader(database_url, tmp_path, url)
    try:
        assert wait_for_commit(engine, loader, snapshot_batches(engine), time.monotonic() + 60)
        time.sleep(random.uniform(0.0, 0.2))
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(10)
    try:
        loader_deadline = time.monotonic() + 30
        while loader.poll() is None and time.monotonic() < loader_deadline:
            time.sleep(0.1)
    finally:
        loader.kill()
    present = assert_whole_or_absent(engine)
    assert len(present) < len(FILES), "the load ended before the server was killed"
    server = _serve(database_url, tmp_path, port)
    try:
        final = subprocess.run([sys.executable, "-m", "fhirserver.cli", *_argv(database_url, url)],
                               env=dict(os.environ, FHIRSERVER_DATA_DIR=str(tmp_path)), capture_output=True,
                               text=True, timeout=120)
        assert final.returncode == 0, final.stdout + final.stderr
        types, history, markers, _ = snapshot(engine)
        assert types == EXPECTED
        assert history == sum(EXPECTED.values())
        assert set(markers.values()) == {1}
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(10)
