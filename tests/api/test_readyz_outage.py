"""/readyz follows PostgreSQL: 200 while it answers, 503 naming the database while it is away,
200 again once it is back (the database is reached through a TCP relay the test cuts and restores)."""
from __future__ import annotations

import json
import socket
import threading
import time
from typing import Callable

import pytest

from tests.conftest import free_port


class Relay:
    """A TCP relay to PostgreSQL that can be cut (listener closed, every live connection reset)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._server: socket.socket | None = None

    def up(self) -> None:
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", self.port))
        srv.listen(50)
        self._server = srv
        threading.Thread(target=self._accept, args=(srv,), daemon=True).start()

    def down(self) -> None:
        srv, self._server = self._server, None
        if srv is not None:
            try:
                srv.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread (close alone does not)
            except OSError:
                pass
            srv.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def _accept(self, srv: socket.socket) -> None:
        while True:
            try:
                client, _ = srv.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def _wait_for(fn: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not fn():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.3)


@pytest.mark.postgres
def test_readyz_follows_postgres_down_and_back(session_app, database_url, settings, tmp_path, make_app) -> None:  # noqa: ANN001
    if not database_url.startswith("postgres"):
        pytest.skip("needs FHIRSERVER_TEST_DATABASE_URL (PostgreSQL)")
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    relay = Relay((url.host or "127.0.0.1", url.port or 5432))
    relay.up()
    try:
        relayed = url.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
        app = make_app(settings.replace(database_url=relayed, data_dir=tmp_path))
        c = app.test_client()
        r = c.get("/readyz")
        assert r.status_code == 200, r.data
        assert c.get("/fhir/Patient?_count=1").status_code == 200  # pooled connections through the relay

        relay.down()
        r = c.get("/readyz")
        assert r.status_code == 503
        body = json.loads(r.data)
        assert body["resourceType"] == "OperationOutcome"
        assert [i["expression"][0] for i in body["issue"]] == ["database"]
        assert c.get("/healthz").status_code == 200  # alive, only not ready

        relay.up()
        _wait_for(lambda: c.get("/readyz").status_code == 200)
        assert c.get("/readyz").json["checks"]["database"] == "ok"
    finally:
        relay.down()


