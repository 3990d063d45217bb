"""The rest of the operator's CLI: `db downgrade` and back, `user passwd`, `client list`, one line
and a non-zero exit for every failure (never a traceback), help per action."""
from __future__ import annotations

import json
import pytest
from sqlalchemy import create_engine

from fhirserver.cli import main
from fhirserver.storage.migrate import script_heads
from tests.conftest import free_port


def _run(capsys, *argv: str) -> tuple[int, str, str]:  # noqa: ANN001
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _one_line_error(code: int, err: str) -> None:
    assert code != 0
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(("fhirserver: error:", "error:")), err


def test_db_downgrade_to_a_revision_and_back(scratch_db, capsys):  # noqa: ANN001
    db = ("--database-url", scratch_db)
    code, out, _ = _run(capsys, "db", "upgrade", *db)
    assert code == 0 and "up to date" in out
    code, out, err = _run(capsys, "db", "downgrade", "0002", *db)
    assert code == 0, err
    assert out.startswith("schema revision: 0002 ") and "behind" in out
    engine = create_engine(scratch_db.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        from sqlalchemy import inspect

        tables = set(inspect(engine).get_table_names())
        assert "resource" in tables and "auth_user" not in tables and "dicom_instance" not in tables
    finally:
        engine.dispose()
    code, out, _ = _run(capsys, "db", "current", *db)
    assert code == 0 and "0002" in out
    code, out, _ = _run(capsys, "db", "upgrade", *db)
    assert code == 0 and "up to date" in out and set(script_heads()) <= set(out.split(": ", 1)[1].split(" (")[0].split(", "))
    code, out, _ = _run(capsys, "db", "downgrade", "base", *db)
    assert code == 0 and "none" in out
    code, _, err = _run(capsys, "db", "downgrade", "no-such-revision", *db)
    _one_line_error(code, err)
    assert "no-such-revision" in err


def test_user_passwd_changes_the_login(scratch_db, capsys):  # noqa: ANN001
    from smart_auth.store import LoginError, check_login
    from fhirserver.storage import make_engine

    db = ("--database-url", scratch_db)
    code, _, err = _run(capsys, "user", "add", "pwuser", "--role", "staff", "--password", "first-pass1", *db)
    assert code == 0, err
    code, out, err = _run(capsys, "user", "passwd", "pwuser", "--password", "second-pass2", *db)
    assert code == 0, err
    assert json.loads(out) == {"username": "pwuser", "password": "changed"}
    engine = make_engine(scratch_db)
    try:
        assert check_login(engine, "pwuser", "second-pass2")["username"] == "pwuser"
        with pytest.raises(LoginError):
            check_login(engine, "pwuser", "first-pass1")
    finally:
        engine.dispose()
    code, _, err = _run(capsys, "user", "passwd", "nobody-here", "--password", "second-pass2", *db)
    _one_line_error(code, err)
    assert "nobody-here" in err
    code, _, err = _run(capsys, "user", "passwd", "pwuser", "--password", "short", *db)
    _one_line_error(code, err)


def test_user_password_from_the_environment(scratch_db, capsys, monkeypatch):  # noqa: ANN001
    """FHIRSERVER_USER_PASSWORD (through Settings) stands for --password; the flag wins."""
    from smart_auth.store import check_login
    from fhirserver.storage import make_engine

    db = ("--database-url", scratch_db)
    monkeypatch.setenv("FHIRSERVER_USER_PASSWORD", "from-the-env1")
    code, _, err = _run(capsys, "user", "add", "envuser", "--role", "staff", *db)
    assert code == 0, err
    code, _, err = _run(capsys, "user", "add", "flaguser", "--role", "staff", "--password", "from-the-flag1", *db)
    assert code == 0, err
    engine = make_engine(scratch_db)
    try:
        assert check_login(engine, "envuser", "from-the-env1")["username"] == "envuser"
        assert check_login(engine, "flaguser", "from-the-flag1")["username"] == "flaguser"
    finally:
        engine.dispose()


def test_client_add_list_remove(scratch_db, capsys):  # noqa: ANN001
    db = ("--database-url", scratch_db)
    code, out, _ = _run(capsys, "client", "add", "--name", "Listed app", "--client-id", "listed-app",
                        "--redirect-uri", "https://app.example/cb", *db)
    assert code == 0 and json.loads(out)["client_id"] == "listed-app"
    code, out, _ = _run(capsys, "client", "list", *db)
    assert code == 0
    listed = {c["client_id"]: c for c in json.loads(out)}
    assert listed["listed-app"]["name"] == "Listed app"
    assert not any("secret" in k for c in listed.values() for k in c)
    code, out, _ = _run(capsys, "client", "remove", "listed-app", *db)
    assert code == 0
    code, out, _ = _run(capsys, "client", "list", *db)
    assert "listed-app" not in {c["client_id"] for c in json.loads(out)}
    code, _, err = _run(capsys, "client", "remove", "listed-app", *db)
    _one_line_error(code, err)


@pytest.mark.parametrize("argv", [
    ("user", "list"), ("client", "list"), ("user", "passwd", "x", "--password", "longenough1"),
    ("user", "remove", "x"), ("client", "remove", "x"), ("db", "upgrade"), ("db", "downgrade", "0002"),
    ("dicom-node", "list"),
])
def test_every_command_on_an_unreachable_database_is_one_line(capsys, argv) -> None:  # noqa: ANN001
    code, out, err = _run(capsys, *argv, "--database-url", f"postgresql://postgres@127.0.0.1:{free_port()}/none")
    _one_line_error(code, err)
    assert "database" in err and "127.0.0.1" in err


def test_help_of_one_action_shows_only_its_flags(capsys):  # noqa: ANN001
    with pytest.raises(SystemExit) as exc:
        main(["user", "--help"])
    assert exc.value.code == 0
    text_ = capsys.readouterr().out
    assert "passwd" in text_ and "--redirect-uri" not in text_ and "--dicom-port" not in text_
    with pytest.raises(SystemExit):
        main(["user", "passwd", "--help"])
    text_ = capsys.readouterr().out
    assert "--password" in text_ and "--role" not in text_
    with pytest.raises(SystemExit):
        main(["db", "downgrade", "--help"])
    text_ = capsys.readouterr().out
    assert "revision" in text_ and "--role" not in text_
    with pytest.raises(SystemExit) as exc:
        main(["db", "downgrade"])  # the revision is required
    assert exc.value.code == 2
