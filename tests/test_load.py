"""`fhirserver load`: Bundles and NDJSON into the database or a running server, with a resume journal."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import text

from fhirserver import load as loadmod
from fhirserver.cli import main
from tests.conftest import fhir_json, free_port

DATA = Path(__file__).parent / "data" / "load"
CLEMENTE = DATA / "synthea-Clemente_Kreiger.json"   # 70 entries, 1 Patient
MALCOLM = DATA / "synthea-Malcolm_Dach.json"        # 101 entries, 1 Patient
PATIENTS = DATA / "patients.ndjson"                 # 5 Patients with ids
MIXED = DATA / "patients-mixed.ndjson"              # good, invalid birthDate, blank, not JSON, good
BAD = DATA / "bad-bundle.json"                      # transaction with Patient.birthDate "not-a-date"
SINGLE = DATA / "single-patient.json"               # one Patient with an id, no Bundle
NOT_JSON = DATA / "not-json.json"                   # truncated JSON


def run(database_url: str, journal: Path, *files: Path, extra: tuple[str, ...] = ()) -> int:
    return main(["load", *map(str, files), "--database-url", database_url,
                 "--journal", str(journal), "--no-progress", *extra])


def total(client, query: str) -> int:  # noqa: ANN001
    resp = client.get(f"/fhir/{query}{'&' if '?' in query else '?'}_summary=count")
    assert resp.status_code == 200, resp.data
    return fhir_json(resp)["total"]


def row_counts(app) -> tuple[int, int]:  # noqa: ANN001
    """(current resources, history versions): a second load must change neither."""
    with app.extensions["fhirserver"].repo.engine.connect() as conn:
        return (conn.execute(text("SELECT count(*) FROM resource")).scalar_one(),
                conn.execute(text("SELECT count(*) FROM resource_history")).scalar_one())


def test_direct_load_then_rerun_skips_finished_files(app, client, database_url, tmp_path, capsys):  # noqa: ANN001
    journal = tmp_path / "journal.json"
    assert run(database_url, journal, CLEMENTE, MALCOLM, PATIENTS, SINGLE) == 0
    out = capsys.readouterr().out
    assert "loaded 4 files, 177 resources, 0 errors" in out
    assert total(client, "Patient") == 2 + 5 + 1
    assert total(client, "Observation") == 48 + 60
    assert fhir_json(client.get("/fhir/Patient/load-pat-3"))["name"][0]["family"] == "Hopper"
    assert fhir_json(client.get("/fhir/Patient/load-pat-3"))["birthDate"] == "1906-12-09"
    assert fhir_json(client.get("/fhir/Patient/load-single"))["name"][0]["given"] == ["Sam"]
    # urn:uuid references were rewritten to the stored Patient
    patients = {f"Patient/{e['resource']['id']}"
                for e in fhir_json(client.get("/fhir/Patient?_count=100"))["entry"]}
    observations = fhir_json(client.get("/fhir/Observation?_count=200"))["entry"]
    subjects = {e["resource"]["subject"]["reference"] for e in observations}
    assert len(subjects) == 2 and subjects <= patients
    counts = row_counts(app)

    data = json.loads(journal.read_text())
    (files,) = data["targets"].values()
    assert {Path(v["path"]).name for v in files.values() if v["done"]} == {
        CLEMENTE.name, MALCOLM.name, PATIENTS.name, SINGLE.name}

    assert run(database_url, journal, CLEMENTE, MALCOLM, PATIENTS, SINGLE) == 0
    out = capsys.readouterr().out
    assert out.count("skipped (already loaded)") == 4
    assert "loaded 0 files (4 skipped), 0 resources, 0 errors" in out
    assert row_counts(app) == counts
    assert total(client, "Patient") == 8


def test_journal_is_keyed_by_content_not_name(app, client, database_url, tmp_path, capsys):  # noqa: ANN001
    journal = tmp_path / "journal.json"
    assert run(database_url, journal, CLEMENTE) == 0
    renamed = tmp_path / "renamed.json"
    shutil.copy(CLEMENTE, renamed)
    assert run(database_url, journal, renamed) == 0
    assert "skipped (already loaded)" in capsys.readouterr().out
    assert total(client, "Patient") == 1


def test_bad_bundle_is_reported_and_load_goes_on(app, client, database_url, tmp_path, capsys):  # noqa: ANN001
    journal = tmp_path / "journal.json"
    assert run(database_url, journal, BAD, NOT_JSON, CLEMENTE) == 1
    captured = capsys.readouterr()
    assert "bad-bundle.json" in captured.err and "birthDate" in captured.err
    assert "422" in captured.err
    assert "not-json.json" in captured.err and "not valid JSON" in captured.err
    assert "Traceback" not in captured.err
    assert "loaded 1 files, 70 resources, 2 errors" in captured.out
    # the failed transaction left nothing behind; the later file was loaded
    assert total(client, "Patient") == 1
    assert total(client, "Observation") == 48     # not 49: the bad bundle's Observation rolled back
    # the failed bundle is not journaled: a re-run tries it again, the good one is skipped
    assert run(database_url, journal, BAD, CLEMENTE) == 1
    captured = capsys.readouterr()
    assert "bad-bundle.json" in captured.err
    assert f"{CLEMENTE}: skipped (already loaded)" in captured.out


def test_stop_on_error_stops_before_later_files(app, client, database_url, tmp_path, capsys):  # noqa: ANN001
    journal = tmp_path / "journal.json"
    assert run(database_url, journal, PATIENTS, BAD, CLEMENTE, extra=("--stop-on-error",)) == 1
    captured = capsys.readouterr()
    assert "bad-bundle.json" in captured.err and "birthDate" in captured.err
    assert total(client, "Patient") == 5          # PATIENTS loaded, CLEMENTE never reached
    assert total(client, "Observation") == 0


def test_ndjson_line_errors_name_the_line(app, client, database_url, tmp_path, capsys):  # noqa: ANN001
    journal = tmp_path / "journal.json"
    assert run(database_url, journal, MIXED) == 1
    err = capsys.readouterr().err
    assert f"{MIXED} line 2" in err and "birthDate" in err
    assert f"{MIXED} line 4" in err and "not valid JSON" in err
    assert total(client, "Patient") == 2
    assert client.get("/fhir/Patient/load-mixed-2").status_code == 404
    # a re-run retries only the failed lines: the good ones are not written again
    counts = row_counts(app)
    assert run(database_url, journal, MIXED) == 1
    captured = capsys.readouterr()
    assert "retrying 2 failed lines" in captured.out
    assert f"{MIXED} line 2" in captured.err and f"{MIXED} line 4" in captured.err
    assert row_counts(app) == counts


def test_ndjson_put_makes_rerun_without_journal_idempotent(app, client, database_url, tmp_path):  # noqa: ANN001
    assert run(database_url, tmp_path / "a.json", PATIENTS) == 0
    assert run(database_url, tmp_path / "b.json", PATIENTS) == 0   # fresh journal: sent again
    assert total(client, "Patient") == 5                          # PUT Type/id: same resources


def test_interrupted_ndjson_resumes_after_last_committed_batch(app, client, database_url, tmp_path,  # noqa: ANN001
                                                               monkeypatch, capsys):
    journal = tmp_path / "journal.json"
    real_send = loadmod.DirectTarget.send
    calls = {"n": 0}

    def failing_send(self, bundle, raw=None):  # noqa: ANN001, ANN202
        calls["n"] += 1
        if calls["n"] == 2:
            raise loadmod.FatalLoadError("database went away")
        return real_send(self, bundle, raw)

    monkeypatch.setattr(loadmod.DirectTarget, "send", failing_send)
    assert run(database_url, journal, PATIENTS, extra=("--batch-size", "2")) == 1
    assert "database went away" in capsys.readouterr().err
    assert total(client, "Patient") == 2
    entry = next(iter(json.loads(journal.read_text())["targets"].values()))
    assert [(v["done"], v["lines"]) for v in entry.values()] == [(False, 2)]

    monkeypatch.setattr(loadmod.DirectTarget, "send", real_send)
    assert run(database_url, journal, PATIENTS, extra=("--batch-size", "2")) == 0
    out = capsys.readouterr().out
    assert "resuming after line 2" in out and "3 resources" in out
    assert total(client, "Patient") == 5
    for i in range(1, 6):  # every Patient has exactly one version: nothing was sent twice
        assert fhir_json(client.get(f"/fhir/Patient/load-pat-{i}/_history"))["total"] == 1


def test_connection_error_is_reported_without_traceback(tmp_path, capsys):  # noqa: ANN001
    url = f"http://127.0.0.1:{free_port()}/fhir"
    code = main(["load", str(PATIENTS), str(CLEMENTE), "--url", url,
                 "--journal", str(tmp_path / "j.json"), "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err
    assert "cannot reach" in err and url in err and "Traceback" not in err


def test_missing_and_unsupported_files_are_errors(app, database_url, tmp_path, capsys):  # noqa: ANN001
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    assert run(database_url, tmp_path / "j.json", tmp_path / "nope.json", other, SINGLE) == 1
    captured = capsys.readouterr()
    assert "nope.json" in captured.err and "notes.txt" in captured.err
    assert "loaded 1 files" in captured.out


@pytest.mark.slow
def test_url_mode_against_live_server(app, client, live_server, tmp_path, capsys):  # noqa: ANN001
    journal = tmp_path / "journal.json"
    args = ["load", str(CLEMENTE), str(BAD), str(PATIENTS), str(MIXED), "--url", live_server.base,
            "--journal", str(journal), "--no-progress", "--batch-size", "2"]
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "bad-bundle.json" in captured.err and "birthDate" in captured.err
    assert f"{MIXED} line 2" in captured.err
    assert "loaded 2 files, 77 resources, 3 errors" in captured.out
    assert total(client, "Patient") == 1 + 5 + 2
    assert total(client, "Observation") == 48
    counts = row_counts(app)

    assert main(args) == 1   # MIXED and BAD still fail; the rest is skipped
    captured = capsys.readouterr()
    assert captured.out.count("skipped (already loaded)") == 2
    assert row_counts(app) == counts
