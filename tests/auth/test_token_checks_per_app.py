"""Two apps in one process keep their own bearer-token checks (`smart_auth.bearer.TokenChecks`).

Each cached check carries the revocation stamp of its own database; a cache shared by the process
would let an app trust another database's check whenever the two stamps happen to be equal. The
tests make the stamps equal on purpose, so a shared cache would answer 200 where 401 is right.
"""
from __future__ import annotations

import uuid
from typing import Any, Iterator

import pytest
from flask import Flask
from sqlalchemy import event

from fhirserver.broadcast import publish, read_stamp
from smart_auth import store
from smart_auth.revocation_signal import REVOCATIONS
from smart_helpers import bearer
from tests.conftest import app_fixture

SYSTEM = {"role": "system"}


@pytest.fixture()
def other_app(settings, scratch_db: str, tmp_path, open_apps) -> Iterator[Flask]:  # noqa: ANN001
    """A second auth-on app in this process, on a database of its own."""
    yield from app_fixture(settings.replace(database_url=scratch_db, data_dir=tmp_path, insecure_no_auth=False),
                           open_apps, upgrade_schema=True)


def _token(app: Flask, value: str | None = None) -> str:
    tok, _ = store.save_token(app.extensions["fhirserver"].repo.engine, kind="access", grant_id=uuid.uuid4().hex,
                              client_id="ehr", user_pk=None, scope="system/*.rs", context=SYSTEM,
                              lifetime=600, value=value)
    return tok


def _stamp(app: Flask) -> int:
    return read_stamp(app.extensions["fhirserver"].repo.engine, REVOCATIONS)


def _bump_to(app: Flask, target: int) -> None:
    """Publish revocations on `app`'s database until its stamp is `target` (and its listener saw it)."""
    services = app.extensions["fhirserver"]
    while _stamp(app) < target:
        publish(services.repo.engine, REVOCATIONS)
    assert _stamp(app) == target
    services.broadcast.settle(REVOCATIONS, target)


def _status(app: Flask, tok: str, path: str = "/fhir/Patient") -> int:
    return app.test_client().get(path, headers=bearer(tok)).status_code


def test_a_token_of_one_apps_database_is_unknown_to_the_other(sapp, other_app) -> None:  # noqa: ANN001
    tok = _token(sapp)
    assert _status(sapp, tok) == 200  # checked in sapp's database, and cached
    _bump_to(other_app, _stamp(sapp))
    # the token is not in other_app's database: a check shared through the process would pass
    assert _status(other_app, tok) == 401
    assert _status(other_app, tok, "/fhir/Patient/x") == 401  # the lean read path too
    assert _status(sapp, tok) == 200


def test_a_token_revoked_in_one_database_is_refused_there_though_the_other_app_checked_it(
        sapp, other_app) -> None:  # noqa: ANN001
    """The same token value in both databases (as after a copy of the database), revoked in one:
    that app refuses it at once, the other still serves it from its own database."""
    engine = sapp.extensions["fhirserver"].repo.engine
    tok = _token(sapp)
    _token(other_app, value=tok)
    assert _status(sapp, tok) == 200
    _bump_to(other_app, _stamp(sapp) + 1)  # the stamp sapp's database gets from the revocation
    assert _status(other_app, tok) == 200  # checked under other_app's stamp
    with sapp.app_context():
        store.revoke_token(engine, store.find_token(engine, tok))
    assert _stamp(sapp) == _stamp(other_app)
    assert _status(sapp, tok) == 401
    assert _status(sapp, tok, "/fhir/Patient/x") == 401
    assert _status(other_app, tok) == 200


def test_a_cached_check_costs_no_token_query(sapp, other_app) -> None:  # noqa: ANN001
    """Per-app caches still save the database round trip: one token query per app, then none."""
    queries: dict[str, int] = {"sapp": 0, "other": 0}

    def counter(name: str) -> Any:
        def count(conn, cursor, statement, *args) -> None:  # noqa: ANN001
            if "auth_token" in statement:
                queries[name] += 1
        return count

    engines = {"sapp": sapp.extensions["fhirserver"].repo.engine,
               "other": other_app.extensions["fhirserver"].repo.engine}
    listeners = [(engines[n], counter(n)) for n in engines]
    tok = _token(sapp)
    _token(other_app, value=tok)
    for eng, fn in listeners:
        event.listen(eng, "before_cursor_execute", fn)
    try:
        for _ in range(3):
            for app in (sapp, other_app):
                assert _status(app, tok) == 200
                assert _status(app, tok, "/fhir/Patient/x") == 404  # the lean path, same cached check
    finally:
        for eng, fn in listeners:
            event.remove(eng, "before_cursor_execute", fn)
    assert queries == {"sapp": 1, "other": 1}
    assert sapp.extensions["fhirserver"].tokens is not other_app.extensions["fhirserver"].tokens
