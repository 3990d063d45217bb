"""Conditional writes are atomic, conflicting transactions never answer 500, and GET requests that
write (an AuditEvent) work next to writers: 8 client threads against several gunicorn workers on
the test database (SQLite, or PostgreSQL with FHIRSERVER_TEST_DATABASE_URL)."""
from __future__ import annotations

import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator

import pytest
import requests

from tests.conftest import LiveServer

pytestmark = pytest.mark.slow

THREADS = 8
ROUNDS = 4
SYSTEM = "urn:test:race"
HDR = {"Content-Type": "application/fhir+json"}


@pytest.fixture(scope="module")
def server(session_app, database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:  # noqa: ANN001
    live = LiveServer(database_url, tmp_path_factory.mktemp("atomic"), workers=3)
    yield live
    live.stop()


def _all_at_once(n: int, work: Callable[[requests.Session, int], Any]) -> list[Any]:
    """Run `work` in n threads released together (each with its own connection)."""
    barrier = threading.Barrier(n, timeout=60)

    def one(i: int) -> Any:
        with requests.Session() as s:
            barrier.wait()
            return work(s, i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def _patient(value: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": value}], **extra}


def _matching(base: str, value: str, res_type: str = "Patient") -> list[dict[str, Any]]:
    bundle = requests.get(f"{base}/{res_type}", params={"identifier": f"{SYSTEM}|{value}", "_count": "50"},
                          timeout=60).json()
    return [e["resource"] for e in bundle.get("entry") or []]


def test_if_none_exist_creates_exactly_one(server: LiveServer) -> None:
    for _ in range(ROUNDS):
        value = uuid.uuid4().hex

        def post(s: requests.Session, i: int) -> int:
            return s.post(f"{server.base}/Patient", data=json.dumps(_patient(value)), timeout=120,
                          headers={**HDR, "If-None-Exist": f"identifier={SYSTEM}|{value}"}).status_code

        codes = _all_at_once(THREADS, post)
        assert sorted(codes) == [200] * (THREADS - 1) + [201], codes
        assert len(_matching(server.base, value)) == 1


def test_conditional_put_creates_exactly_one(server: LiveServer) -> None:
    for _ in range(ROUNDS):
        value = uuid.uuid4().hex

        def put(s: requests.Session, i: int) -> int:
            return s.put(f"{server.base}/Patient", params={"identifier": f"{SYSTEM}|{value}"},
                         data=json.dumps(_patient(value, birthDate=f"19{50 + i}-01-01")),
                         headers=HDR, timeout=120).status_code

        codes = _all_at_once(THREADS, put)
        assert sorted(codes) == [200] * (THREADS - 1) + [201], codes
        found = _matching(server.base, value)
        assert len(found) == 1
        assert found[0]["meta"]["versionId"] == str(THREADS)  # every update landed on the one resource


def test_transaction_if_none_exist_creates_exactly_one(server: LiveServer) -> None:
    for _ in range(ROUNDS):
        value = uuid.uuid4().hex

        def transact(s: requests.Session, i: int) -> int:
            bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
                {"fullUrl": "urn:uuid:" + str(uuid.uuid4()), "resource": _patient(value),
                 "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={SYSTEM}|{value}"}},
                {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "race"},
                              "identifier": [{"system": SYSTEM, "value": value}]},
                 "request": {"method": "PUT", "url": f"Observation?identifier={SYSTEM}|{value}"}}]}
            bundle["entry"][1]["resource"]["subject"] = {"reference": bundle["entry"][0]["fullUrl"]}
            return s.post(server.base, data=json.dumps(bundle), headers=HDR, timeout=120).status_code

        codes = _all_at_once(THREADS, transact)
        assert codes == [200] * THREADS
        patients = _matching(server.base, value)
        assert len(patients) == 1
        observations = _matching(server.base, value, "Observation")
        assert len(observations) == 1
        assert observations[0]["subject"]["reference"] == f"Patient/{patients[0]['id']}"


def test_conditional_patch_and_delete_apply_once_each(server: LiveServer) -> None:
    value = uuid.uuid4().hex
    created = requests.post(f"{server.base}/Patient", data=json.dumps(_patient(value)), headers=HDR, timeout=60)
    assert created.status_code == 201
    pid = created.json()["id"]

    def patch(s: requests.Session, i: int) -> int:  # appends one name: a lost update drops one
        ops = [{"op": "add", "path": "/name" if i == 0 else "/name/-", "value": [{"text": f"n{i}"}] if i == 0
                else {"text": f"n{i}"}}]
        return s.patch(f"{server.base}/Patient", params={"identifier": f"{SYSTEM}|{value}"}, data=json.dumps(ops),
                       headers={"Content-Type": "application/json-patch+json"}, timeout=120).status_code

    first = requests.Session()
    assert patch(first, 0) == 200
    codes = _all_at_once(THREADS, lambda s, i: patch(s, i + 1))
    assert codes == [200] * THREADS
    body = requests.get(f"{server.base}/Patient/{pid}", timeout=60).json()
    assert sorted(n["text"] for n in body["name"]) == sorted(f"n{i}" for i in range(THREADS + 1))
    assert body["meta"]["versionId"] == str(THREADS + 2)

    codes = _all_at_once(THREADS, lambda s, i: s.delete(
        f"{server.base}/Patient", params={"identifier": f"{SYSTEM}|{value}"}, timeout=120).status_code)
    assert codes == [204] * THREADS
    history = requests.get(f"{server.base}/Patient/{pid}/_history", timeout=60).json()
    assert [e["request"]["method"] for e in history["entry"]].count("DELETE") == 1


@pytest.mark.parametrize("by", ["id", "criteria"])
def test_opposite_order_transactions_answer_200_or_409(server: LiveServer, by: str) -> None:
    a, b = (f"order-{uuid.uuid4().hex[:12]}" for _ in range(2))
    for rid in (a, b):
        assert requests.put(f"{server.base}/Patient/{rid}", data=json.dumps(_patient(rid, id=rid)),
                            headers=HDR, timeout=60).status_code == 201
    per_thread = 6

    def url(rid: str) -> str:
        return f"Patient/{rid}" if by == "id" else f"Patient?identifier={SYSTEM}|{rid}"

    def transact(s: requests.Session, i: int) -> list[int]:
        codes = []
        for k in range(per_thread):
            order = (a, b) if (i + k) % 2 else (b, a)
            bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
                {"resource": _patient(rid, id=rid, birthDate=f"20{i:02d}-01-{k + 1:02d}"),
                 "request": {"method": "PUT", "url": url(rid)}} for rid in order]}
            r = s.post(server.base, data=json.dumps(bundle), headers=HDR, timeout=120)
            if r.status_code == 409:
                assert r.json()["resourceType"] == "OperationOutcome"
            codes.append(r.status_code)
        return codes

    codes = [c for per in _all_at_once(THREADS, transact) for c in per]
    assert set(codes) <= {200, 409}, codes
    done = codes.count(200)
    assert done >= len(codes) // 2  # retries resolve most conflicts
    for rid in (a, b):  # each committed transaction wrote exactly one version of each
        current = requests.get(f"{server.base}/Patient/{rid}", timeout=60).json()
        assert current["meta"]["versionId"] == str(1 + done)


def test_get_operations_that_audit_work_next_to_writers(server: LiveServer) -> None:
    value = uuid.uuid4().hex
    created = requests.post(f"{server.base}/Patient", headers=HDR, timeout=60, data=json.dumps(
        _patient(value, telecom=[{"system": "email", "value": f"{value}@example.org"}])))
    pid = created.json()["id"]
    per_thread = 10

    def work(s: requests.Session, i: int) -> list[int]:
        codes = []
        for k in range(per_thread):
            if i % 4 == 0:
                r = s.get(f"{server.base}/Patient/$find-by-email", params={"email": f"{value}@example.org"}, timeout=120)
                if r.status_code == 200:
                    assert r.json()["parameter"][0]["valueBoolean"] is True
            elif i % 4 == 1:
                r = s.get(f"{server.base}/Patient/{pid}/$access-log", timeout=120)
            elif i % 4 == 2 and k % 5 == 0:  # rebuilds index rows: a GET that writes a lot
                r = s.get(f"{server.base}/Organization/$reindex", timeout=120)
            else:
                r = s.post(f"{server.base}/Patient", data=json.dumps(_patient(f"{value}-{i}-{k}")), headers=HDR,
                           timeout=120)
            codes.append(r.status_code)
        return codes

    codes = [c for per in _all_at_once(THREADS, work) for c in per]
    assert set(codes) <= {200, 201}, codes
    log = requests.get(f"{server.base}/Patient/{pid}/$access-log", params={"_count": "1000"}, timeout=60).json()
    reads = sum(1 for i in range(THREADS) if i % 4 == 1) * per_thread
    assert log["total"] >= reads  # every access-log read left its AuditEvent
