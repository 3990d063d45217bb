"""Basic search (_id, _lastUpdated, identifier, _count, paging links, total) and history."""
from __future__ import annotations

import json
import time
from urllib.parse import parse_qsl, urlsplit

import pytest

from tests.conftest import fhir_json

JSON = {"Content-Type": "application/fhir+json"}


def make(client, n: int, rt: str = "Patient") -> list[str]:  # noqa: ANN001
    ids = []
    for i in range(n):
        body = {"resourceType": rt, "identifier": [{"system": "urn:seq", "value": str(i)}]}
        if rt == "Observation":
            body.update(status="final", code={"text": "x"})
        ids.append(fhir_json(client.post(f"/fhir/{rt}", data=json.dumps(body), headers=JSON))["id"])
    return ids


def link(bundle: dict, rel: str) -> str | None:
    return next((l["url"] for l in bundle.get("link", []) if l["relation"] == rel), None)


def get(client, url: str) -> dict:  # noqa: ANN001
    parts = urlsplit(url)
    return fhir_json(client.get(parts.path + ("?" + parts.query if parts.query else "")))


def test_search_by_id(client) -> None:  # noqa: ANN001
    ids = make(client, 3)
    b = fhir_json(client.get(f"/fhir/Patient?_id={ids[0]},{ids[2]}"))
    assert b["type"] == "searchset" and b["total"] == 2
    assert {e["resource"]["id"] for e in b["entry"]} == {ids[0], ids[2]}
    assert all(e["search"]["mode"] == "match" for e in b["entry"])
    assert all(e["fullUrl"] == f"http://testserver/fhir/Patient/{e['resource']['id']}" for e in b["entry"])
    assert dict(parse_qsl(urlsplit(link(b, "self")).query))["_id"] == f"{ids[0]},{ids[2]}"


def test_search_by_identifier(client) -> None:  # noqa: ANN001
    make(client, 3)
    assert fhir_json(client.get("/fhir/Patient?identifier=urn:seq|1"))["total"] == 1
    assert fhir_json(client.get("/fhir/Patient?identifier=1"))["total"] == 1
    assert fhir_json(client.get("/fhir/Patient?identifier=urn:seq|"))["total"] == 3
    assert fhir_json(client.get("/fhir/Patient?identifier=urn:other|1"))["total"] == 0
    assert fhir_json(client.get("/fhir/Patient?identifier=urn:seq|1,urn:seq|2"))["total"] == 2


def test_search_by_last_updated(client) -> None:  # noqa: ANN001
    first = make(client, 2)
    stamp = fhir_json(client.get(f"/fhir/Patient/{first[1]}"))["meta"]["lastUpdated"]
    time.sleep(0.01)
    later = make(client, 1)
    b = fhir_json(client.get(f"/fhir/Patient?_lastUpdated=gt{stamp.replace('+', '%2B')}"))
    assert [e["resource"]["id"] for e in b["entry"]] == later
    year = stamp[:4]
    assert fhir_json(client.get(f"/fhir/Patient?_lastUpdated={year}"))["total"] == 3
    assert fhir_json(client.get(f"/fhir/Patient?_lastUpdated=lt{year}"))["total"] == 0
    # a malformed value of a known parameter is refused even under lenient handling: ignoring
    # it would answer with every resource (HAPI answers 400 too)
    for prefer in ({}, {"Prefer": "handling=strict"}):
        for bad in ("notadate", "1985-13-45"):
            r = client.get(f"/fhir/Patient?_lastUpdated={bad}", headers=prefer)
            assert r.status_code == 400 and fhir_json(r)["resourceType"] == "OperationOutcome"
        assert client.get("/fhir/Patient?birthdate=1985-13-45", headers=prefer).status_code == 400


def test_unknown_parameters_lenient_and_strict(client) -> None:  # noqa: ANN001
    make(client, 2)
    b = fhir_json(client.get("/fhir/Patient?nosuch=1"))
    assert b["total"] == 2
    assert "nosuch" not in link(b, "self")
    assert b["entry"][-1]["search"]["mode"] == "outcome"
    r = client.get("/fhir/Patient?nosuch=1", headers={"Prefer": "handling=strict"})
    assert r.status_code == 400 and fhir_json(r)["resourceType"] == "OperationOutcome"


def test_paging_links_walk_every_result_once(client) -> None:  # noqa: ANN001
    ids = make(client, 7)
    page = fhir_json(client.get("/fhir/Patient?_count=3"))
    assert page["total"] == 7 and link(page, "previous") is None
    seen = [e["resource"]["id"] for e in page["entry"]]
    pages = [page]
    while link(page, "next"):
        page = get(client, link(page, "next"))
        pages.append(page)
        seen += [e["resource"]["id"] for e in page["entry"]]
    assert seen == ids and len(pages) == 3
    back = get(client, link(pages[2], "previous"))
    assert [e["resource"]["id"] for e in back["entry"]] == ids[3:6]
    first = get(client, link(back, "previous"))
    assert [e["resource"]["id"] for e in first["entry"]] == ids[0:3]


def test_paging_holds_while_data_changes(client) -> None:  # noqa: ANN001
    ids = make(client, 6)
    page1 = fhir_json(client.get("/fhir/Patient?_count=3"))
    # a resource of page 1 is deleted and a new one created before page 2 is fetched
    client.delete(f"/fhir/Patient/{ids[0]}")
    new = make(client, 1)
    page2 = get(client, link(page1, "next"))
    assert [e["resource"]["id"] for e in page2["entry"]] == ids[3:6]
    page3 = get(client, link(page2, "next"))
    assert [e["resource"]["id"] for e in page3["entry"]] == new


def test_count_zero_and_total_none(client) -> None:  # noqa: ANN001
    make(client, 2)
    b = fhir_json(client.get("/fhir/Patient?_count=0"))
    assert b["total"] == 2 and "entry" not in b
    b = fhir_json(client.get("/fhir/Patient?_total=none"))
    assert "total" not in b and len(b["entry"]) == 2
    assert client.get("/fhir/Patient?_count=abc").status_code == 400


def test_post_search(client) -> None:  # noqa: ANN001
    ids = make(client, 2)
    r = client.post("/fhir/Patient/_search", data={"_id": ids[1]})
    assert r.status_code == 200
    assert [e["resource"]["id"] for e in fhir_json(r)["entry"]] == [ids[1]]


def test_system_search_by_type(client) -> None:  # noqa: ANN001
    make(client, 2)
    make(client, 1, "Observation")
    assert fhir_json(client.get("/fhir?_summary=count"))["total"] == 3
    assert fhir_json(client.get("/fhir?_type=Observation"))["total"] == 1


def test_instance_history(client) -> None:  # noqa: ANN001
    pid = make(client, 1)[0]
    client.put(f"/fhir/Patient/{pid}", data=json.dumps({"resourceType": "Patient", "id": pid, "active": True}),
               headers=JSON)
    client.delete(f"/fhir/Patient/{pid}")
    b = fhir_json(client.get(f"/fhir/Patient/{pid}/_history"))
    assert b["type"] == "history" and b["total"] == 3
    methods = [e["request"]["method"] for e in b["entry"]]
    assert methods == ["DELETE", "PUT", "POST"]
    assert "resource" not in b["entry"][0]
    assert b["entry"][1]["resource"]["meta"]["versionId"] == "2"
    assert b["entry"][2]["response"]["etag"] == 'W/"1"'
    assert client.get("/fhir/Patient/nobody/_history").status_code == 404


def test_type_and_system_history_since_and_count(client) -> None:  # noqa: ANN001
    make(client, 1)
    time.sleep(0.01)  # lastUpdated has millisecond precision: two quick creates can share one
    make(client, 1)
    stamp = fhir_json(client.get("/fhir/Patient/_history"))["entry"][0]["resource"]["meta"]["lastUpdated"]
    time.sleep(0.01)
    make(client, 1, "Observation")
    make(client, 1)
    assert fhir_json(client.get("/fhir/Patient/_history"))["total"] == 3
    assert fhir_json(client.get("/fhir/_history"))["total"] == 4
    since = fhir_json(client.get(f"/fhir/_history?_since={stamp.replace('+', '%2B')}"))
    assert since["total"] == 3  # the boundary version and the two after it
    page = fhir_json(client.get("/fhir/_history?_count=3"))
    assert len(page["entry"]) == 3
    rest = get(client, link(page, "next"))
    assert len(rest["entry"]) == 1 and link(rest, "next") is None
    assert client.get("/fhir/_history?_since=garbage").status_code == 400


def test_history_at(client) -> None:  # noqa: ANN001
    pid = make(client, 1)[0]
    v1 = fhir_json(client.get(f"/fhir/Patient/{pid}"))["meta"]["lastUpdated"]
    time.sleep(0.01)
    client.put(f"/fhir/Patient/{pid}", data=json.dumps({"resourceType": "Patient", "id": pid}), headers=JSON)
    b = fhir_json(client.get(f"/fhir/Patient/{pid}/_history?_at={v1.replace('+', '%2B')}"))
    assert [e["resource"]["meta"]["versionId"] for e in b["entry"]] == ["1"]


@pytest.mark.parametrize("path", ["/fhir/Patient?_format=xml", "/fhir/Patient/_history?_format=xml"])
def test_bundles_in_xml(client, path) -> None:  # noqa: ANN001
    make(client, 1)
    r = client.get(path)
    assert r.status_code == 200 and r.data.startswith(b"<?xml") and b"<Bundle" in r.data
