"""The operator's CLI: every command exits 0 on success with the expected output, non-zero with
one line on failure; per-action help; `load --url` into a server with auth on."""
from __future__ import annotations

import json
import pytest
import requests

from fhirserver.cli import main
from tests.conftest import DATA, LiveServer


def _run(capsys, *argv: str) -> tuple[int, str, str]:  # noqa: ANN001
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_db_upgrade_and_current_exit_0(session_app, database_url, capsys):  # noqa: ANN001
    code, out, err = _run(capsys, "db", "upgrade", "--database-url", database_url)
    assert code == 0 and "up to date" in out and "Traceback" not in err
    code, out, err = _run(capsys, "db", "current", "--database-url", database_url)
    assert code == 0 and out.startswith("schema revision: ") and "up to date" in out


def test_db_current_on_unreachable_database_is_one_line(capsys):  # noqa: ANN001
    from tests.conftest import free_port

    code, out, err = _run(capsys, "db", "current", "--database-url",
                          f"postgresql://postgres@127.0.0.1:{free_port()}/none")
    assert code == 1 and err.startswith("fhirserver: error: database") and len(err.strip().splitlines()) == 1


def test_version(capsys):  # noqa: ANN001
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("fhirserver ")


def test_help_is_per_action(capsys):  # noqa: ANN001
    with pytest.raises(SystemExit) as exc:
        main(["user", "add", "--help"])
    assert exc.value.code == 0
    add_help = capsys.readouterr().out
    assert "--role" in add_help and "username" in add_help
    with pytest.raises(SystemExit):
        main(["user", "list", "--help"])
    assert "--role" not in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["client", "launch", "--help"])
    launch_help = capsys.readouterr().out
    assert "--patient" in launch_help and "--redirect-uri" not in launch_help


def test_user_add_list_remove(session_app, database_url, capsys):  # noqa: ANN001
    db = ("--database-url", database_url)
    code, _, _ = _run(capsys, "user", "add", "opsuser", "--role", "staff", "--password", "longenough1",
                      "--organization", "org1", *db)
    assert code == 0
    code, out, _ = _run(capsys, "user", "list", *db)
    assert code == 0
    mine = [u for u in json.loads(out) if u["username"] == "opsuser"]
    assert mine and mine[0]["role"] == "staff" and mine[0]["organizations"] == ["org1"]
    assert "password_hash" not in mine[0]
    code, out, _ = _run(capsys, "user", "remove", "opsuser", *db)
    assert code == 0 and json.loads(out)["removed"] == "opsuser"
    code, out, _ = _run(capsys, "user", "list", *db)
    assert "opsuser" not in [u["username"] for u in json.loads(out)]
    code, _, err = _run(capsys, "user", "remove", "opsuser", *db)
    assert code == 1 and "no user" in err


@pytest.fixture()
def auth_server(session_app, database_url, tmp_path):  # noqa: ANN001, ANN201
    (tmp_path / "live").mkdir()
    server = LiveServer(database_url, tmp_path / "live", workers=1, auth=True)
    yield server
    server.stop()


def _backend_client(capsys, database_url: str) -> dict:  # noqa: ANN001
    code, out, _ = _run(capsys, "client", "add", "--name", "Loader", "--backend", "--confidential",
                        "--scope", "system/*.cruds", "--database-url", database_url)
    assert code == 0
    return json.loads(out)


def test_load_url_with_token_into_auth_on_server(auth_server, database_url, capsys):  # noqa: ANN001
    bundle = DATA / "load" / "single-patient.json"
    patient_id = json.loads(bundle.read_text())["id"]  # a single resource file, loaded by its id
    common = ("--url", auth_server.base, "--database-url", database_url, "--no-progress", "--forget-journal")
    code, _, err = _run(capsys, "load", str(bundle), *common)  # no credentials: refused, one line
    assert code != 0 and "401" in err
    client = _backend_client(capsys, database_url)
    tok = requests.post(auth_server.root + "/auth/token", timeout=30,
                        data={"grant_type": "client_credentials", "scope": "system/*.cruds"},
                        auth=(client["client_id"], client["client_secret"])).json()["access_token"]
    # `--opt=value`: a token or secret may begin with "-", which argparse takes for an option
    code, out, err = _run(capsys, "load", str(bundle), *common, f"--token={tok}")
    assert code == 0, err
    read = requests.get(f"{auth_server.base}/Patient/{patient_id}", timeout=30,
                        headers={"Authorization": f"Bearer {tok}"})
    assert read.status_code == 200 and read.json()["name"][0]["family"] == "Single"
    # the same with the client's credentials: the loader gets its own token
    code, _, err = _run(capsys, "load", str(bundle), *common, f"--client-id={client['client_id']}",
                        f"--client-secret={client['client_secret']}")
    assert code == 0, err
