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
