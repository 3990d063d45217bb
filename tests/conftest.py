"""Shared fixtures: a database per test run (SQLite file, or PostgreSQL when
FHIRSERVER_TEST_DATABASE_URL is set), the app on it, a test client, and a live server."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

import pytest
import requests
from sqlalchemy import create_engine, text

from flask import Flask

from fhirserver.app import close_app, create_app
from fhirserver.config import Settings, settings_from_env
from fhirserver.storage import INDEX_TABLES
from live_helpers import free_port

DATA = Path(__file__).parent / "data"
BASE = "http://testserver/fhir"


def _pg_admin_url(url: str) -> tuple[str, str]:
    head, _, dbname = url.rpartition("/")
    return head + "/postgres", dbname.split("?")[0]


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Iterator[str]:
    pg = os.environ.get("FHIRSERVER_TEST_DATABASE_URL")
    if not pg:
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'fhir.sqlite3'}"
        return
    admin_url, dbname = _pg_admin_url(pg)
    name = f"{dbname}_{worker_id}".replace("-", "_")
    admin = create_engine(admin_url.replace("postgresql://", "postgresql+psycopg://", 1),
                          isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        c.execute(text(f'CREATE DATABASE "{name}"'))
    yield f"{admin_url.rpartition('/')[0]}/{name}"
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture()
def scratch_db(tmp_path, worker_id: str) -> Iterator[str]:  # noqa: ANN001
    """A database of its own (migrations go down and up here, not under the other tests)."""
    pg = os.environ.get("FHIRSERVER_TEST_DATABASE_URL")
    if not pg:
        yield f"sqlite:///{tmp_path / 'scratch.sqlite3'}"
        return
    head, _, dbname = pg.rpartition("/")
    name = f"{dbname.split('?')[0]}_cli_{worker_id}".replace("-", "_")
    admin = create_engine(head.replace("postgresql://", "postgresql+psycopg://", 1) + "/postgres",
                          isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        c.execute(text(f'CREATE DATABASE "{name}"'))
    yield f"{head}/{name}"
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def is_postgres(database_url: str) -> bool:
    return database_url.startswith("postgres")


@pytest.fixture(scope="session")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(database_url=database_url, base_url="http://testserver",
                    data_dir=tmp_path_factory.mktemp("data"), log_requests=False,
                    max_body_bytes=2 * 1024 * 1024, insecure_no_auth=True,
                    # FHIRSERVER_DICOM_FAST_PATH=0 runs the DICOM tests on the libraries alone
                    dicom_fast_path=settings_from_env().dicom_fast_path)


@contextmanager
def built_app(settings: Settings, *, track: list[Flask] | None = None, **options: Any) -> Iterator[Flask]:
    """An app that is closed when the block ends: its audit writer's last batch is written
    then, and no thread of it writes into the shared database during a later test. `track`:
    the list the app is on while open (`open_apps`)."""
    app = create_app(settings, **options)
    if track is not None:
        track.append(app)
    try:
        yield app
    finally:
        if track is not None:
            track.remove(app)
        close_app(app)


def app_fixture(settings: Settings, open_apps: list[Flask], **options: Any) -> Iterator[Flask]:
    """The body of a session or module fixture that builds an app:
    `yield from app_fixture(settings, open_apps)`; closed at the fixture's teardown."""
    with built_app(settings, track=open_apps, **options) as app:
        yield app


@pytest.fixture(scope="session")
def open_apps() -> list[Flask]:
    """The session and module apps still open: after each test their queued AuditEvents are
    written (see `app`), so none of them lands in the database during a later test."""
    return []


@pytest.fixture()
def make_app(open_apps: list[Flask]) -> Iterator[Any]:
    """`make_app(settings, **options)`: `create_app` for a test body; every app it built is
    closed when the test ends."""
    with ExitStack() as stack:
        yield lambda settings, **options: stack.enter_context(built_app(settings, track=open_apps, **options))


@pytest.fixture(scope="session")
def session_app(settings: Settings, open_apps: list[Flask]):  # noqa: ANN201
    yield from app_fixture(settings, open_apps, upgrade_schema=True)


@pytest.fixture()
def app(session_app, open_apps):  # noqa: ANN001, ANN201
    """The app on an emptied database; after the test, the AuditEvents its requests (and
    those of every other open app) queued are written, before the next test empties it."""
    repo = session_app.extensions["fhirserver"].repo
    with repo.engine.begin() as conn:
        for table in INDEX_TABLES:  # derived rows: no foreign key cascades them away
            conn.execute(table.delete())
        conn.execute(text("DELETE FROM resource_history"))
        conn.execute(text("DELETE FROM resource"))
        conn.execute(text("DELETE FROM auth_failure"))  # per-address rate limits of the auth server
    yield session_app
    for each in list(open_apps):
        each.extensions["fhirserver"].audit.flush()


@pytest.fixture()
def client(app):  # noqa: ANN001, ANN201
    return app.test_client()


@pytest.fixture()
def repo(app):  # noqa: ANN001, ANN201
    return app.extensions["fhirserver"].repo


class LiveServer:
    """`fhirserver serve` in a subprocess (real gunicorn workers); `auth=False` opens the API."""

    def __init__(self, database_url: str, data_dir: Path, workers: int = 2, auth: bool = False,
                 jobs: bool = False, start_seconds: float = 60) -> None:
        self.port = free_port()
        self.root = f"http://127.0.0.1:{self.port}"
        self.base = self.root + "/fhir"
        # no job threads unless asked: a server living through the session would otherwise run
        # (into its own data folder) the jobs other tests enqueue on the same database
        self.env = dict(os.environ, FHIRSERVER_DATABASE_URL=database_url, FHIRSERVER_DATA_DIR=str(data_dir),
                        FHIRSERVER_JOB_THREADS="2" if jobs else "0")
        self.log_path = Path(data_dir) / "server.log"  # a file, not a pipe: an unread pipe blocks the server
        argv = [sys.executable, "-m", "fhirserver.cli", "serve", "--port", str(self.port),
                "--workers", str(workers), "--dicom-port", "0"]
        if not auth:
            argv.append("--insecure-no-auth")
        self.proc = subprocess.Popen(argv, env=self.env, stdout=subprocess.DEVNULL,
                                     stderr=open(self.log_path, "wb"))
        deadline = time.time() + start_seconds
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited: " + self.log_path.read_text(errors="replace")[-2000:])
            try:
                if requests.get(self.base + "/metadata", timeout=10).status_code == 200:
                    return
            except requests.RequestException:  # not listening yet, or still starting
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="session")
def live_server(session_app, database_url: str, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN001, ANN201
    server = LiveServer(database_url, tmp_path_factory.mktemp("live"))
    yield server
    server.stop()


def fhir_json(resp) -> dict:  # noqa: ANN001
    """Parse a test-client response body as JSON."""
    import json

    return json.loads(resp.data)


class Mailbox:
    """A real SMTP server's inbox (aiosmtpd handler): every message with its recipients and body."""

    def __init__(self) -> None:
        import threading

        self.messages: list = []
        self.lock = threading.Lock()
        self.url = ""

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001, ANN201, N802
        import email

        msg = email.message_from_bytes(envelope.content)
        body = msg.get_payload(decode=True).decode() if not msg.is_multipart() else \
            msg.get_payload(0).get_payload(decode=True).decode()
        with self.lock:
            self.messages.append({"to": envelope.rcpt_tos, "subject": msg["Subject"], "body": body})
        return "250 OK"

    def to(self, addr: str) -> list[dict]:
        with self.lock:
            return [m for m in self.messages if addr in m["to"]]


# What a signed-in test leaves in the auth server's tables (children first: the order deletes run in).
AUTH_TABLES = ("auth_token", "auth_code", "auth_session", "auth_launch", "auth_jti", "auth_user", "oauth_client")


def emptied(app: Any, tables: Iterable[str], mailbox: Mailbox | None = None) -> Any:
    """`app` with every row of `tables` deleted, in the order given, and `mailbox`'s messages
    dropped: the `app` fixture empties the resources only, and a session-wide auth-on app would
    otherwise carry one test's users, tokens and mail into the next."""
    with app.extensions["fhirserver"].repo.engine.begin() as c:
        for t in tables:
            c.execute(text(f"DELETE FROM {t}"))
    if mailbox is not None:
        with mailbox.lock:
            mailbox.messages.clear()
    return app


def run_smtp_server() -> Iterator[Mailbox]:
    """Start aiosmtpd on a free loopback port; yields its Mailbox (`.url` is smtp://host:port)."""
    from aiosmtpd.controller import Controller

    port = free_port()
    box = Mailbox()
    ctl = Controller(box, hostname="127.0.0.1", port=port)
    ctl.start()
    box.url = f"smtp://127.0.0.1:{port}"
    try:
        yield box
    finally:
        ctl.stop()


@pytest.fixture(scope="session")
def moto_s3() -> Iterator["MotoS3"]:
    """A moto S3 server for this test process (see tests/s3_server.py)."""
    from tests.s3_server import MotoS3

    server = MotoS3(free_port()).start()
    yield server
    server.stop()


@pytest.fixture()
def s3_blob_url(moto_s3) -> str:  # noqa: ANN001
    """`--blob-url` of a fresh, empty bucket on the test S3 server."""
    return moto_s3.bucket()
