"""Concurrent writers on one resource never lose an update (threads; PostgreSQL in CI)."""
from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from fhirserver.model.jsonio import loads


def test_threads_without_if_match_serialize_versions(repo) -> None:  # noqa: ANN001
    with repo.transaction(write=True) as tx:
        tx.update("Patient", "race", {"resourceType": "Patient", "id": "race"})
    threads, per_thread = 8, 10

    def work(n: int) -> None:
        for i in range(per_thread):
            with repo.transaction(write=True) as tx:
                cur = tx.current("Patient", "race", for_update=True)
                body = loads(cur.body)
                seen = body.get("multipleBirthInteger", 0)
                body["multipleBirthInteger"] = seen + 1   # read-modify-write under the row lock
                tx.update("Patient", "race", body)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, range(threads)))
    with repo.transaction() as tx:
        cur = tx.current("Patient", "race")
        history, total = tx.history("Patient", "race", count=1000)
    assert cur.version_id == 1 + threads * per_thread
    assert loads(cur.body)["multipleBirthInteger"] == threads * per_thread  # no lost update
    assert total == 1 + threads * per_thread
    assert sorted(h.version_id for h in history) == list(range(1, 2 + threads * per_thread))


def test_concurrent_if_match_lets_exactly_one_writer_win(client) -> None:  # noqa: ANN001
    hdr = {"Content-Type": "application/fhir+json"}
    client.put("/fhir/Patient/im", data=json.dumps({"resourceType": "Patient", "id": "im"}), headers=hdr)
    app = client.application
    barrier = threading.Barrier(6)
    statuses: list[int] = []

    def attempt(n: int) -> None:
        c = app.test_client()
        barrier.wait()
        r = c.put("/fhir/Patient/im", data=json.dumps({"resourceType": "Patient", "id": "im", "gender": "other"}),
                  headers={**hdr, "If-Match": 'W/"1"'})
        statuses.append(r.status_code)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200] + [412] * 5
    assert json.loads(client.get("/fhir/Patient/im").data)["meta"]["versionId"] == "2"


def test_concurrent_create_on_update_makes_one_resource(client) -> None:  # noqa: ANN001
    hdr = {"Content-Type": "application/fhir+json"}
    app = client.application
    barrier = threading.Barrier(6)
    statuses: list[int] = []

    def attempt(n: int) -> None:
        c = app.test_client()
        barrier.wait()
        r = c.put("/fhir/Patient/newbie", data=json.dumps({"resourceType": "Patient", "id": "newbie"}), headers=hdr)
        statuses.append(r.status_code)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200] * 5 + [201]
    assert json.loads(client.get("/fhir/Patient/newbie").data)["meta"]["versionId"] == "6"


@pytest.mark.slow
def test_workers_behave_as_one_server(live_server) -> None:  # noqa: ANN001
    """Two gunicorn worker processes on one database: concurrent PUTs over HTTP all land."""
    base = live_server.base
    hdr = {"Content-Type": "application/fhir+json"}
    requests.put(f"{base}/Patient/multi", data=json.dumps({"resourceType": "Patient", "id": "multi"}),
                 headers=hdr, timeout=30).raise_for_status()

    def put(i: int) -> int:
        with requests.Session() as s:
            return s.put(f"{base}/Patient/multi", data=json.dumps(
                {"resourceType": "Patient", "id": "multi", "birthDate": f"19{10 + i:02d}-01-01"}),
                headers=hdr, timeout=30).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(put, range(40)))
    assert codes == [200] * 40
    hist = requests.get(f"{base}/Patient/multi/_history?_count=100", timeout=30).json()
    assert hist["total"] == 41
    assert sorted(int(e["resource"]["meta"]["versionId"]) for e in hist["entry"]) == list(range(1, 42))


def test_read_transaction_that_writes_restarts_as_a_writer(repo, is_postgres) -> None:  # noqa: ANN001
    """A transaction begun as a reader that writes after another connection committed: on SQLite
    it cannot take the write lock any more, so it starts over as a writer instead of failing."""
    from fhirserver.storage import run_transaction

    attempts: list[int] = []

    def work(tx):  # noqa: ANN001, ANN202
        attempts.append(1)
        assert tx.current("Patient", "upgrade-me") is None  # the read snapshot begins here
        if not tx.conn.get_execution_options().get("fhir_write"):  # a reader, every time
            with repo.transaction(write=True) as other:
                other.create("Patient", {"resourceType": "Patient"})
        return tx.create("Patient", {"resourceType": "Patient", "active": True})

    stored = run_transaction(repo, work, write=False)
    with repo.transaction() as tx:
        assert tx.current("Patient", stored.res_id).version_id == 1
    assert len(attempts) == (1 if is_postgres else 2)


def _opposite_order_writers(repo, attempts: int) -> tuple[list[int], list[Exception]]:  # noqa: ANN001
    from fhirserver.storage import run_transaction

    for rid in ("dl-a", "dl-b"):
        with repo.transaction(write=True) as tx:
            tx.update("Patient", rid, {"resourceType": "Patient", "id": rid})
    barrier = threading.Barrier(2, timeout=20)
    runs = [0, 0]
    errors: list[Exception] = []

    def writer(i: int) -> None:
        order = ("dl-a", "dl-b") if i == 0 else ("dl-b", "dl-a")

        def work(tx):  # noqa: ANN001, ANN202
            runs[i] += 1
            tx.update("Patient", order[0], {"resourceType": "Patient", "id": order[0]})
            if runs[i] == 1:
                barrier.wait()  # both hold their first row: each now waits for the other's
            tx.update("Patient", order[1], {"resourceType": "Patient", "id": order[1]})

        try:
            run_transaction(repo, work, write=True, attempts=attempts)
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return runs, errors


def test_deadlocked_transaction_runs_again(repo, is_postgres) -> None:  # noqa: ANN001
    if not is_postgres:
        pytest.skip("SQLite write transactions serialize from BEGIN IMMEDIATE: they cannot deadlock")
    runs, errors = _opposite_order_writers(repo, attempts=5)
    assert errors == []
    assert sorted(runs) == [1, 2]  # the deadlock victim ran once more
    with repo.transaction() as tx:
        assert [tx.current("Patient", rid).version_id for rid in ("dl-a", "dl-b")] == [3, 3]


def test_conflict_that_remains_is_reported_not_applied(repo, is_postgres) -> None:  # noqa: ANN001
    from fhirserver.storage import TransactionConflict

    if not is_postgres:
        pytest.skip("SQLite write transactions serialize from BEGIN IMMEDIATE: they cannot deadlock")
    runs, errors = _opposite_order_writers(repo, attempts=1)
    assert len(errors) == 1 and isinstance(errors[0], TransactionConflict)
    with repo.transaction() as tx:  # the winner's versions only: the loser left nothing
        assert [tx.current("Patient", rid).version_id for rid in ("dl-a", "dl-b")] == [2, 2]


def test_conditional_criteria_are_normalized() -> None:
    from fhirserver.storage.locks import criteria_key, normalized_criteria

    assert normalized_criteria("Patient", [("name", "x"), ("identifier", "s|1"), ("_format", "json"),
                                           ("name", "x")]) == "Patient?identifier=s%7C1&name=x"
    assert criteria_key("Patient", [("a", "1"), ("b", "2")]) == criteria_key("Patient", [("b", "2"), ("a", "1")])
    assert criteria_key("Patient", [("a", "1")]) != criteria_key("Observation", [("a", "1")])


def test_transaction_bundle_chosen_as_deadlock_victim_runs_again_whole(client, repo, is_postgres) -> None:  # noqa: ANN001
    """A transaction Bundle that loses a deadlock runs again from its entries: its urn:uuid
    references point at what the successful run created, and nothing of the failed run is left."""
    import time

    from sqlalchemy import text

    if not is_postgres:
        pytest.skip("SQLite write transactions serialize from BEGIN IMMEDIATE: they cannot deadlock")
    hdr = {"Content-Type": "application/fhir+json"}
    for rid in ("vic-a", "vic-b"):
        client.put(f"/fhir/Patient/{rid}", headers=hdr, data=json.dumps(
            {"resourceType": "Patient", "id": rid, "identifier": [{"system": "urn:test:victim", "value": rid}]}))
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:0b3f1a52-9d1e-4c59-8d43-3b0f6c1d2e01", "resource": {"resourceType": "Patient"},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Patient", "id": "vic-a", "gender": "other"},
         "request": {"method": "PUT", "url": "Patient/vic-a"}},
        {"request": {"method": "DELETE", "url": "Patient?identifier=urn:test:victim|vic-b"}},  # locks vic-b late
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "victim"},
                      "subject": {"reference": "urn:uuid:0b3f1a52-9d1e-4c59-8d43-3b0f6c1d2e01"}},
         "request": {"method": "POST", "url": "Observation"}}]}
    result: list = []
    with repo.engine.connect() as blocker:
        tx = blocker.begin()
        blocker.execute(text("SELECT 1 FROM resource WHERE res_type = 'Patient' AND res_id = 'vic-b' FOR UPDATE"))
        worker = threading.Thread(target=lambda: result.append(
            client.application.test_client().post("/fhir", data=json.dumps(bundle), headers=hdr)))
        worker.start()
        deadline = time.time() + 20  # the Bundle holds vic-a and, references rewritten, waits for vic-b
        with repo.engine.connect() as watcher:  # its own transactions: fresh pg_stat_activity each time
            while time.time() < deadline and not watcher.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database()")).scalar():
                watcher.rollback()
                time.sleep(0.05)
        # now wait for vic-a ourselves: a cycle; the Bundle, waiting longer, is the victim
        blocker.execute(text("SELECT 1 FROM resource WHERE res_type = 'Patient' AND res_id = 'vic-a' FOR UPDATE"))
        tx.commit()
        worker.join(60)
    resp = result[0]
    assert resp.status_code == 200, resp.data
    entries = json.loads(resp.data)["entry"]
    def path(loc: str) -> str:  # http://testserver/fhir/Type/id/_history/1 -> Type/id
        return loc.split("/fhir/", 1)[1].split("/_history", 1)[0]

    created = path(entries[0]["response"]["location"]).split("/")[1]
    obs = json.loads(client.get("/fhir/" + path(entries[3]["response"]["location"])).data)
    assert obs["subject"]["reference"] == f"Patient/{created}"
    patients = json.loads(client.get("/fhir/Patient?_count=50").data)
    assert sorted(e["resource"]["id"] for e in patients["entry"]) == sorted(["vic-a", created])
    assert json.loads(client.get("/fhir/Observation").data)["total"] == 1
