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


def run(database_url: str, *files: Path, extra: tuple[str, ...] = ()) -> int:
    return main(["load", *map(str, files), "--database-url", database_url, "--no-progress", *extra])


@pytest.fixture(autouse=True)
def no_journal(app):  # noqa: ANN001, ANN201
    """Each test starts with an empty load journal and no committed batch ids (beside empty data)."""
    with app.extensions["fhirserver"].repo.engine.begin() as conn:
        conn.execute(text("DELETE FROM load_journal"))
        conn.execute(text("DELETE FROM committed_batch"))


def journal_of(app, target: str = "database") -> dict:  # noqa: ANN001
    """The journal rows of one target, by file sha256."""
    return loadmod.Journal(app.extensions["fhirserver"].repo.engine, target).files()


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
    assert run(database_url, CLEMENTE, MALCOLM, PATIENTS, SINGLE) == 0
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

    files = journal_of(app)
    assert len(files) == 4 and all(f.done for f in files.values())

    assert run(database_url, CLEMENTE, MALCOLM, PATIENTS, SINGLE) == 0
    out = capsys.readouterr().out
    assert out.count("skipped (already loaded)") == 4
    assert "loaded 0 files (4 skipped), 0 resources, 0 errors" in out
    assert row_counts(app) == counts
    assert total(client, "Patient") == 8


def test_journal_is_keyed_by_content_not_name(app, client, database_url, tmp_path, capsys):  # noqa: ANN001
    assert run(database_url, CLEMENTE) == 0
    renamed = tmp_path / "renamed.json"
    shutil.copy(CLEMENTE, renamed)
    assert run(database_url, renamed) == 0
    assert "skipped (already loaded)" in capsys.readouterr().out
    assert total(client, "Patient") == 1


def test_bad_bundle_is_reported_and_load_goes_on(app, client, database_url, tmp_path, capsys):  # noqa: ANN001
    assert run(database_url, BAD, NOT_JSON, CLEMENTE) == 1
    captured = capsys.readouterr()
    assert "bad-bundle.json" in captured.err and "birthDate" in captured.err
    assert "422" in captured.err
    assert "not-json.json" in captured.err and "not valid JSON" in captured.err
    assert "Traceback" not in captured.err
    assert "loaded 1 files, 70 resources, 2 errors" in captured.out
    # the failed transaction left nothing behind; the later file was loaded
    assert total(client, "Patient") == 1
    assert total(client, "Observation") == 48     # not 49: the bad bundle's Observation rolled back
    # the failed bundle is not marked done: a re-run tries it again, the good one is skipped
    assert run(database_url, BAD, CLEMENTE) == 1
    captured = capsys.readouterr()
    assert "bad-bundle.json" in captured.err
    assert f"{CLEMENTE}: skipped (already loaded)" in captured.out


def test_stop_on_error_stops_before_later_files(app, client, database_url, tmp_path, capsys):  # noqa: ANN001
    assert run(database_url, PATIENTS, BAD, CLEMENTE, extra=("--stop-on-error",)) == 1
    captured = capsys.readouterr()
    assert "bad-bundle.json" in captured.err and "birthDate" in captured.err
    assert total(client, "Patient") == 5          # PATIENTS loaded, CLEMENTE never reached
    assert total(client, "Observation") == 0


def test_ndjson_line_errors_name_the_line(app, client, database_url, tmp_path, capsys):  # noqa: ANN001
    assert run(database_url, MIXED) == 1
    err = capsys.readouterr().err
    assert f"{MIXED} line 2" in err and "birthDate" in err
    assert f"{MIXED} line 4" in err and "not valid JSON" in err
    assert total(client, "Patient") == 2
    assert client.get("/fhir/Patient/load-mixed-2").status_code == 404
    # a re-run retries only the failed lines: the good ones are not written again
    counts = row_counts(app)
    assert run(database_url, MIXED) == 1
    captured = capsys.readouterr()
    assert "retrying 2 failed lines" in captured.out
    assert f"{MIXED} line 2" in captured.err and f"{MIXED} line 4" in captured.err
    assert row_counts(app) == counts


def test_ndjson_put_makes_rerun_without_journal_idempotent(app, client, database_url, tmp_path):  # noqa: ANN001
    assert run(database_url, PATIENTS) == 0
    assert run(database_url, PATIENTS, extra=("--forget-journal",)) == 0   # sent again
    assert total(client, "Patient") == 5                          # PUT Type/id: same resources


def test_interrupted_ndjson_resumes_after_last_committed_batch(app, client, database_url, tmp_path,  # noqa: ANN001
                                                               monkeypatch, capsys):
    real_send = loadmod.DirectTarget.send
    calls = {"n": 0}

    def failing_send(self, bundle):  # noqa: ANN001, ANN202
        calls["n"] += 1
        if calls["n"] == 2:
            raise loadmod.FatalLoadError("database went away")
        return real_send(self, bundle)

    monkeypatch.setattr(loadmod.DirectTarget, "send", failing_send)
    assert run(database_url, PATIENTS, extra=("--batch-size", "2")) == 1
    assert "database went away" in capsys.readouterr().err
    assert total(client, "Patient") == 2
    (state,) = journal_of(app).values()
    assert (state.done, state.lines, state.inflight) == (False, 4, [3, 4])   # lines 3-4 in flight

    monkeypatch.setattr(loadmod.DirectTarget, "send", real_send)
    assert run(database_url, PATIENTS, extra=("--batch-size", "2")) == 0
    out = capsys.readouterr().out
    assert "resuming after line 4 (sending 2 lines in flight again)" in out and "3 resources" in out
    assert total(client, "Patient") == 5
    for i in range(1, 6):  # every Patient has exactly one version: nothing was sent twice
        assert fhir_json(client.get(f"/fhir/Patient/load-pat-{i}/_history"))["total"] == 1


def lost_answer(monkeypatch, nth: int) -> None:  # noqa: ANN001
    """The nth send commits, then the loader never hears back (what a kill -9 at that moment does)."""
    real_send = loadmod.DirectTarget.send
    calls = {"n": 0}

    def send(self, bundle):  # noqa: ANN001, ANN202
        calls["n"] += 1
        result = real_send(self, bundle)
        if calls["n"] == nth:
            raise loadmod.FatalLoadError("connection lost after the commit")
        return result

    monkeypatch.setattr(loadmod.DirectTarget, "send", send)


def test_bundle_committed_but_unanswered_is_not_loaded_twice(app, client, database_url, monkeypatch,  # noqa: ANN001
                                                           capsys):
    lost_answer(monkeypatch, 2)
    assert run(database_url, CLEMENTE, MALCOLM, SINGLE) == 1
    assert "connection lost" in capsys.readouterr().err
    counts = row_counts(app)
    assert total(client, "Patient") == 2       # CLEMENTE and MALCOLM committed; SINGLE not reached

    monkeypatch.undo()
    assert run(database_url, CLEMENTE, MALCOLM, SINGLE) == 0
    out = capsys.readouterr().out
    assert f"{CLEMENTE}: skipped (already loaded)" in out
    assert f"{MALCOLM}: already committed before the interruption" in out
    assert "loaded 2 files (1 skipped), 1 resources, 0 errors" in out
    assert total(client, "Patient") == 3
    assert total(client, "Observation") == 48 + 60
    assert row_counts(app) == (counts[0] + 1, counts[1] + 1)   # only SINGLE's Patient is new
    assert all(f.done for f in journal_of(app).values())


def test_ndjson_batch_committed_but_unanswered_is_not_loaded_twice(app, client, database_url,  # noqa: ANN001
                                                                   tmp_path, monkeypatch, capsys):
    # Patients without ids are POSTed: sending them twice would make two of each.
    no_ids = tmp_path / "no-ids.ndjson"
    no_ids.write_text("".join(json.dumps({"resourceType": "Patient", "name": [{"family": f"F{i}"}]}) + "\n"
                              for i in range(5)))
    lost_answer(monkeypatch, 2)
    assert run(database_url, no_ids, extra=("--batch-size", "2")) == 1
    capsys.readouterr()
    assert total(client, "Patient") == 4     # lines 3-4 committed, unanswered
    monkeypatch.undo()
    assert run(database_url, no_ids, extra=("--batch-size", "2")) == 0
    assert "1 resources" in capsys.readouterr().out
    assert total(client, "Patient") == 5
    assert sorted(e["resource"]["name"][0]["family"] for e in
                  fhir_json(client.get("/fhir/Patient?_count=20"))["entry"]) == [f"F{i}" for i in range(5)]


def test_batch_id_makes_a_bundle_apply_once(client):  # noqa: ANN001
    """The server side, for any client: the same Bundle.identifier in the load-batch system twice."""
    bundle = {"resourceType": "Bundle", "type": "transaction",
              "identifier": {"system": "urn:fhirserver:load-batch", "value": "b-1"},
              "entry": [{"resource": {"resourceType": "Patient", "name": [{"family": "Once"}]},
                         "request": {"method": "POST", "url": "Patient"}}]}
    first = client.post("/fhir", json=bundle, headers={"Content-Type": "application/fhir+json"})
    assert first.status_code == 200, first.data
    again = client.post("/fhir", json=bundle, headers={"Content-Type": "application/fhir+json"})
    assert again.status_code == 409
    issue = fhir_json(again)["issue"][0]
    assert issue["code"] == "duplicate" and "b-1" in issue["diagnostics"]
    assert total(client, "Patient?family=Once") == 1
    # a batch: each entry once; the new entry of a resent batch still goes in
    bundle["type"], bundle["identifier"]["value"] = "batch", "b-2"
    assert client.post("/fhir", json=bundle, headers={"Content-Type": "application/fhir+json"}).status_code == 200
    bundle["entry"].append({"resource": {"resourceType": "Patient", "name": [{"family": "Later"}]},
                            "request": {"method": "POST", "url": "Patient"}})
    resp = fhir_json(client.post("/fhir", json=bundle, headers={"Content-Type": "application/fhir+json"}))
    assert [e["response"]["status"][:3] for e in resp["entry"]] == ["409", "201"]
    assert total(client, "Patient?family=Once") == 2 and total(client, "Patient?family=Later") == 1
    # without the identifier nothing changes: the same Bundle twice is two copies
    del bundle["identifier"]
    bundle["type"] = "transaction"
    for _ in range(2):
        assert client.post("/fhir", json=bundle, headers={"Content-Type": "application/fhir+json"}).status_code == 200
    assert total(client, "Patient?family=Later") == 3


def test_connection_error_is_reported_without_traceback(tmp_path, capsys):  # noqa: ANN001
    url = f"http://127.0.0.1:{free_port()}/fhir"
    code = main(["load", str(PATIENTS), str(CLEMENTE), "--url", url,
                 "--data-dir", str(tmp_path), "--no-progress"])
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
def test_url_mode_against_live_server(app, client, live_server, database_url, capsys):  # noqa: ANN001
    # the journal goes in the loader's database (here the server's own)
    args = ["load", str(CLEMENTE), str(BAD), str(PATIENTS), str(MIXED), "--url", live_server.base,
            "--database-url", database_url, "--no-progress", "--batch-size", "2"]
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
    assert len(journal_of(app, "url:" + live_server.base)) == 4


@pytest.mark.slow
def test_same_batch_id_from_many_clients_applies_once(app, client, live_server):  # noqa: ANN001
    """8 clients send one transaction under one batch id at the same moment (real workers):
    exactly one copy is stored, the others hear 409 `duplicate`, nobody gets a 500."""
    import threading

    import requests

    bundle = json.loads(CLEMENTE.read_text())
    bundle["identifier"] = {"system": "urn:fhirserver:load-batch", "value": "race-1"}
    body = json.dumps(bundle)
    start = threading.Barrier(8)
    statuses: list[int] = []

    def post() -> None:
        start.wait()
        resp = requests.post(live_server.base, data=body, timeout=120,
                             headers={"Content-Type": "application/fhir+json", "Prefer": "return=minimal"})
        statuses.append(resp.status_code)

    threads = [threading.Thread(target=post) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200] + [409] * 7
    assert total(client, "Patient") == 1
    assert total(client, "Observation") == 48
