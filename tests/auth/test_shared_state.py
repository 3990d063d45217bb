"""Several hosts on one database behave as one server: revocations, rate limits, clients, keys.

The hosts are real `fhirserver serve` processes (two gunicorn workers each) on the test
database; on SQLite they share its file, as several servers on one machine would. Nothing here
sleeps for a cache's lifetime: a revocation must be refused by the other host on the next request.
"""
from __future__ import annotations

import time
from typing import Any, Iterator

import pytest
import requests
from sqlalchemy import text

from fhirserver.broadcast import APPLICATION_NAME, Broadcast, publish, read_stamp
from smart_auth import store
from tests.conftest import LiveServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def _servers(secure_app, database_url: str, tmp_path_factory) -> Iterator[tuple[LiveServer, LiveServer]]:  # noqa: ANN001
    a = LiveServer(database_url, tmp_path_factory.mktemp("host-a"), auth=True)
    try:
        b = LiveServer(database_url, tmp_path_factory.mktemp("host-b"), auth=True)
    except Exception:
        a.stop()
        raise
    yield a, b
    a.stop()
    b.stop()


@pytest.fixture()
def hosts(_servers, sapp) -> Iterator[tuple[LiveServer, LiveServer]]:  # noqa: ANN001
    """Two hosts (two workers each) on the test database, emptied by `sapp`."""
    yield _servers
    with sapp.extensions["fhirserver"].repo.engine.begin() as c:
        c.execute(text("DELETE FROM auth_failure"))  # the address these tests blocked


def _backend_client(engine: Any) -> tuple[str, str]:
    cl = store.add_client(engine, name="EHR", auth_method="client_secret_basic",
                          grant_types=["client_credentials"], scope="system/*.rs", organization="org1")
    return cl["client_id"], cl["client_secret"]


def _token(host: LiveServer, cid: str, secret: str) -> str:
    r = requests.post(host.root + "/auth/token", auth=(cid, secret), timeout=30,
                      data={"grant_type": "client_credentials", "scope": "system/*.rs"})
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def _status(host: LiveServer, tok: str) -> int:
    return requests.get(host.base + "/Patient", headers={"Authorization": f"Bearer {tok}"},
                        timeout=30).status_code


def _warm(host: LiveServer, tok: str) -> None:
    """Enough requests that both workers of the host have the token's check cached."""
    for _ in range(6):
        assert _status(host, tok) == 200


def test_a_token_revoked_on_one_host_is_refused_by_the_other_at_once(hosts, engine) -> None:  # noqa: ANN001
    a, b = hosts
    cid, secret = _backend_client(engine)
    for _round in range(3):  # more than once: a race that loses rarely still shows
        tok = _token(a, cid, secret)
        _warm(b, tok)
        _warm(a, tok)
        r = requests.post(a.root + "/auth/revoke", auth=(cid, secret), data={"token": tok}, timeout=30)
        assert r.status_code == 200, r.text
        assert [_status(b, tok) for _ in range(6)] == [401] * 6
        assert _status(a, tok) == 401


def test_a_refresh_family_and_a_removed_client_end_on_every_host(hosts, engine) -> None:  # noqa: ANN001
    """Revocations made outside /auth/revoke (the CLI's `client remove`) reach the hosts too."""
    a, b = hosts
    cid, secret = _backend_client(engine)
    tok = _token(a, cid, secret)
    _warm(b, tok)
    from smart_auth.tables import auth_token, oauth_client
    from sqlalchemy import delete, update

    with engine.begin() as c:  # what `fhirserver client remove` does
        c.execute(update(auth_token).where(auth_token.c.client_id == cid).values(revoked=True))
        c.execute(delete(oauth_client).where(oauth_client.c.client_id == cid))
        store.forget_client(c)
        store.bump_revocations(c)
    assert [_status(b, tok) for _ in range(4)] == [401] * 4


def test_failed_logins_count_across_hosts(hosts, engine) -> None:  # noqa: ANN001
    from smart_auth.ratelimit import LIMIT

    a, b = hosts
    cid, _secret = _backend_client(engine)
    form = {"grant_type": "client_credentials", "scope": "system/*.rs"}
    for i in range(LIMIT):
        host = a if i % 2 else b
        r = requests.post(host.root + "/auth/token", auth=(cid, "wrong"), data=form, timeout=30)
        assert r.status_code == 401, r.text
    for host in (a, b):  # half the failures were made on each: both hosts block the address
        r = requests.post(host.root + "/auth/token", auth=(cid, "wrong"), data=form, timeout=30)
        assert r.status_code == 429 and r.json()["error"] == "slow_down"
        assert int(r.headers["Retry-After"]) > 0


def test_a_client_registered_on_one_host_is_a_cors_origin_on_the_other(hosts, engine) -> None:  # noqa: ANN001
    a, b = hosts
    origin = "https://app.example.org"

    def preflight(host: LiveServer, path: str = "/auth/token") -> str | None:
        r = requests.options(host.root + path, timeout=30,
                             headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
        assert r.status_code == 204
        return r.headers.get("Access-Control-Allow-Origin")

    for _ in range(3):  # cached in the workers: no client has it
        assert preflight(b) is None and preflight(a) is None and preflight(b, "/fhir/Patient") is None
    store.add_client(engine, name="Web app", redirect_uris=[origin + "/cb"])
    assert [preflight(b) for _ in range(3)] == [origin] * 3
    assert preflight(b, "/fhir/Patient") == origin


def test_a_rotated_signing_key_is_published_by_every_host(hosts, engine) -> None:  # noqa: ANN001
    a, b = hosts

    def kids(host: LiveServer) -> list[str]:
        return [k["kid"] for k in requests.get(host.root + "/auth/jwks", timeout=30).json()["keys"]]

    kids(a), kids(b)  # cached in the workers
    new = store.rotate_key(engine, retire_old_after=True)
    assert kids(b)[0] == new and kids(a)[0] == new
    assert kids(b) == [new]  # the retired key is neither published nor used to sign


# -- PostgreSQL: the listener ---------------------------------------------------------------------
@pytest.fixture()
def pg_engine(engine, is_postgres: bool):  # noqa: ANN001, ANN201
    if not is_postgres:
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    return engine


def _listening(shared: Broadcast) -> None:
    shared.stamp("test.channel")  # the first use starts the listener
    deadline = time.monotonic() + 30
    while not shared.listening():
        assert time.monotonic() < deadline, "the listener did not connect"
        time.sleep(0.05)


def _terminate_listeners(engine: Any) -> int:
    """End every listener session on this database, and wait until they are gone."""
    with engine.connect() as c:
        return len(c.execute(text(
            "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
            "WHERE application_name = :app AND datname = current_database()"),
            {"app": APPLICATION_NAME}).all())


def _bump_without_notify(engine: Any, channel: str) -> int:
    """A change whose notification nobody receives (what a dropped listener misses)."""
    with engine.begin() as c:
        c.execute(text("INSERT INTO broadcast_stamp (channel, stamp) VALUES (:c, 0) "
                       "ON CONFLICT (channel) DO NOTHING"), {"c": channel})
        return c.execute(text("UPDATE broadcast_stamp SET stamp = stamp + 1 WHERE channel = :c "
                              "RETURNING stamp"), {"c": channel}).scalar_one()


def test_the_listener_follows_notifications_without_reading_the_row(pg_engine) -> None:  # noqa: ANN001
    shared = Broadcast(pg_engine, heartbeat=3600)
    try:
        _listening(shared)
        for _ in range(5):
            new = publish(pg_engine, "test.channel")
            assert shared.settle("test.channel", new, timeout=30)  # the notification arrives
            assert shared.stamp("test.channel") == new
        # a change without a notification is not seen between heartbeats: proof that the
        # stamps above came from the listener, not from a read of the row per call
        missed = _bump_without_notify(pg_engine, "test.channel")
        assert read_stamp(pg_engine, "test.channel") == missed
        assert shared.listening() and shared.stamp("test.channel") == new
    finally:
        shared.close()


def test_the_heartbeat_repairs_a_lost_notification(pg_engine) -> None:  # noqa: ANN001
    shared = Broadcast(pg_engine, heartbeat=0.2)
    try:
        _listening(shared)
        missed = _bump_without_notify(pg_engine, "test.channel")
        deadline = time.monotonic() + 30
        while shared.stamp("test.channel") != missed:
            assert time.monotonic() < deadline, "the heartbeat never re-read the row"
            time.sleep(0.05)
    finally:
        shared.close()


def test_a_killed_listener_never_leaves_a_stale_stamp(pg_engine) -> None:  # noqa: ANN001
    shared = Broadcast(pg_engine, reconnect_after=3.0)  # a long outage: the NOTIFY below is lost
    try:
        _listening(shared)
        before = shared.stamp("test.channel")
        assert _terminate_listeners(pg_engine) >= 1
        missed = publish(pg_engine, "test.channel")  # nobody listens in this process now
        assert missed > before
        assert shared.stamp("test.channel") == missed  # from the row while it reconnects
        _listening(shared)  # it comes back by itself...
        assert shared.stamp("test.channel") == missed
        again = publish(pg_engine, "test.channel")  # ...and follows notifications again
        assert shared.settle("test.channel", again, timeout=30) and shared.stamp("test.channel") == again
    finally:
        shared.close()


def test_hosts_whose_listeners_were_killed_still_refuse_a_revoked_token(hosts, pg_engine) -> None:  # noqa: ANN001
    a, b = hosts
    cid, secret = _backend_client(pg_engine)
    tok = _token(a, cid, secret)
    _warm(b, tok)
    assert _terminate_listeners(pg_engine) >= 2  # every worker of both hosts had one
    # revoked at once, before the listeners are back: their notification is lost to them
    assert requests.post(a.root + "/auth/revoke", auth=(cid, secret), data={"token": tok},
                         timeout=30).status_code == 200
    assert [_status(b, tok) for _ in range(6)] == [401] * 6
    # once the listeners are back, a revocation through A is still refused by B at once
    deadline = time.monotonic() + 30
    while _listener_count(pg_engine) < 2:
        assert time.monotonic() < deadline, "the hosts' listeners did not reconnect"
        time.sleep(0.1)
    tok = _token(a, cid, secret)
    _warm(b, tok)
    assert requests.post(a.root + "/auth/revoke", auth=(cid, secret), data={"token": tok},
                         timeout=30).status_code == 200
    assert [_status(b, tok) for _ in range(6)] == [401] * 6


def _listener_count(engine: Any) -> int:
    with engine.connect() as c:
        return c.execute(text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :app "
                              "AND datname = current_database()"), {"app": APPLICATION_NAME}).scalar_one()


# -- SQLite: several processes of one machine ---------------------------------------------------
def test_sqlite_stamps_follow_other_connections_commits(tmp_path) -> None:  # noqa: ANN001
    """The private connection re-reads the rows only when `data_version` says another
    connection committed; a commit from any other connection (or process) shows at once."""
    import subprocess
    import sys

    from fhirserver.storage import make_engine, upgrade

    url = f"sqlite:///{tmp_path / 'one.db'}"
    engine = make_engine(url)
    upgrade(engine)
    shared = Broadcast(engine)
    assert shared.stamp("test.channel") == 0
    for _ in range(3):
        new = publish(engine, "test.channel")  # another connection of this process
        assert shared.stamp("test.channel") == new
    code = ("from fhirserver.storage import make_engine; from fhirserver.broadcast import publish; "
            f"print(publish(make_engine({url!r}), 'test.channel'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert shared.stamp("test.channel") == int(out.stdout.split()[-1]) == new + 1
    assert shared.stamp("other.channel") == 0
