"""Hostile input: every request a client can make answers an OperationOutcome with a 4xx (or a
budget's 503), never a 500, and leaves the stored data as it was. Runs on SQLite and, with
FHIRSERVER_TEST_DATABASE_URL, on PostgreSQL (where NUL characters and huge numbers used to
reach the driver)."""
from __future__ import annotations

import base64
import json
import socket
import time

import pytest
import requests
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from tests.conftest import BASE, LiveServer, fhir_json

JSON = {"Content-Type": "application/fhir+json"}


def _seed(client) -> dict:  # noqa: ANN001
    """One Patient (version 1) every test starts from; its body is compared at the end."""
    r = client.put("/fhir/Patient/p1", data=json.dumps(
        {"resourceType": "Patient", "id": "p1", "name": [{"family": "Keep"}], "birthDate": "1980-05-01"}),
        headers=JSON)
    assert r.status_code == 201
    return fhir_json(r)


def _snapshot(client) -> list:  # noqa: ANN001
    """What a user would see of the stored data: every current resource and Patient/p1's history."""
    everything = fhir_json(client.get("/fhir/Patient?_count=1000"))
    history = fhir_json(client.get("/fhir/Patient/p1/_history"))
    return sorted(json.dumps(e["resource"], sort_keys=True) for e in everything.get("entry", [])) + [
        str(history.get("total"))]


def _is_outcome(resp) -> bool:  # noqa: ANN001
    if resp.data.lstrip().startswith(b"<"):  # _format=xml
        return b"<OperationOutcome" in resp.data[:200]
    try:
        return fhir_json(resp).get("resourceType") == "OperationOutcome"
    except ValueError:
        return False


def _refused(resp, *statuses: int) -> None:  # noqa: ANN001
    assert resp.status_code in statuses, (resp.status_code, resp.data[:300])
    assert _is_outcome(resp), resp.data[:300]


# -- inputs that used to answer 500 ------------------------------------------------------------
@pytest.mark.parametrize("query", [
    "birthdate=9999-12-31", "birthdate=gt9999-12-31", "birthdate=ap9999-12-31", "birthdate=ap0001-01-01",
    "birthdate=0001-01-01T00:00:00%2B14:00", "birthdate=9999-12-31T23:59:59-14:00",
    "_lastUpdated=9999-12-31", "_lastUpdated=ap0001-01-01",
])
def test_dates_at_the_ends_of_the_calendar_are_ordinary_dates(client, query: str) -> None:
    _seed(client)
    assert client.get("/fhir/Patient?birthdate=1980").json["total"] == 1  # the same search shape works
    resp = client.get(f"/fhir/Patient?{query}")
    assert resp.status_code == 200, resp.data[:300]
    assert resp.json["resourceType"] == "Bundle"


def test_resources_dated_at_the_ends_of_the_calendar_are_stored_and_found(client) -> None:
    for rid, when in (("late", "9999-12-31T23:59:59-14:00"), ("early", "0001-01-01T00:00:00+14:00")):
        r = client.put(f"/fhir/Observation/{rid}", data=json.dumps({
            "resourceType": "Observation", "id": rid, "status": "final", "code": {"text": "x"},
            "effectiveDateTime": when}), headers=JSON)
        assert r.status_code == 201, r.data[:300]
    assert client.get("/fhir/Observation?date=ge9999-01-01").json["total"] == 1
    assert client.get("/fhir/Observation?date=lt0001-01-02").json["total"] == 1
    for q in ("_since=9999-12-31T23:59:59-14:00", "_at=9999-12-31"):
        assert client.get(f"/fhir/Observation/late/_history?{q}").status_code == 200


@pytest.mark.parametrize("method,url,headers,status", [
    ("GET", "/fhir/Patient?_count=%C2%B2", {}, 400),                       # superscript two
    ("GET", "/fhir/Patient?_count=%D9%A3", {}, 400),                       # Arabic-Indic three
    ("GET", "/fhir/Patient?_count=99999999999999999999999", {}, 400),
    ("GET", "/fhir/Patient/p1/_history/%C2%B2", {}, 404),
    ("GET", "/fhir/Patient/p1/_history/99999999999999999999999", {}, 404),
    ("GET", "/fhir/Patient/p1/_history?_page_before=%C2%B2", {}, 400),
    ("GET", "/fhir/Patient/p1/_history?_page_before=99999999999999999999999", {}, 400),
    ("GET", "/fhir/Patient?_page_before=%C2%B2", {}, 400),
    ("GET", "/fhir/Patient?_page_after=99999999999999999999999", {}, 400),
    ("PUT", "/fhir/Patient/p1", {"If-Match": 'W/"²"'}, 400),
    ("PUT", "/fhir/Patient/p1", {"If-Match": 'W/"99999999999999999999999"'}, 400),
    ("DELETE", "/fhir/Patient/p1", {"If-Match": 'W/"٣"'}, 400),
])
def test_numbers_outside_ascii_digits_or_64_bits_are_refused(client, method: str, url: str, headers: dict,
                                                             status: int) -> None:
    _seed(client)
    before = _snapshot(client)
    body = json.dumps({"resourceType": "Patient", "id": "p1", "name": [{"family": "Changed"}]})
    ok = client.open("/fhir/Patient/p1/_history/1", method="GET")
    assert ok.status_code == 200  # the well-formed spelling of the same read works
    resp = client.open(url, method=method, data=body if method == "PUT" else None,
                       headers={**JSON, **headers})
    _refused(resp, status)
    assert _snapshot(client) == before


def _cursor(values: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


@pytest.mark.parametrize("cursor", [
    _cursor([0, "a", 2 ** 70]), _cursor([0, {"d": 5}, 1]), _cursor([0, [], 1]), _cursor({"a": 1}),
    _cursor([0, {"n": "NaN"}, 1]), _cursor([0, {"d": "not a date"}, 1]), _cursor([0, "x\u0000", 1]),
    _cursor([2, "a", 1]), _cursor("text"), "!!!!",
])
def test_paging_cursors_of_the_wrong_shape_are_refused(client, cursor: str) -> None:
    _seed(client)
    client.post("/fhir/Patient", data=json.dumps({"resourceType": "Patient", "name": [{"family": "Other"}]}),
                headers=JSON)
    first = client.get("/fhir/Patient?_sort=family&_count=1")
    nxt = next(link["url"] for link in first.json["link"] if link["relation"] == "next")
    assert client.get(nxt.replace("http://testserver", "")).status_code == 200  # a real cursor pages
    _refused(client.get(f"/fhir/Patient?_sort=family&_count=1&_page_after={cursor}"), 400)


@pytest.mark.parametrize("body,content_type", [
    ('{"resourceType":"Patient","extension":' + "[" * 5000 + "]" * 5000 + "}", "application/fhir+json"),
    ('{"a":' * 5000 + "1" + "}" * 5000, "application/fhir+json"),
    ("[" * 200 + "]" * 200, "application/json-patch+json"),
])
def test_deeply_nested_json_is_refused(client, body: str, content_type: str) -> None:
    _seed(client)
    before = _snapshot(client)
    method = "PATCH" if "patch" in content_type else "POST"
    url = "/fhir/Patient/p1" if method == "PATCH" else "/fhir/Patient"
    _refused(client.open(url, method=method, data=body, headers={"Content-Type": content_type}), 400)
    bundle = '{"resourceType":"Bundle","type":"batch","entry":[' + "[" * 300 + "]" * 300 + "]}"
    _refused(client.post("/fhir", data=bundle, headers=JSON), 400)
    assert _snapshot(client) == before


def test_ordinary_nesting_is_accepted(client) -> None:
    """A Questionnaire nested 30 items deep is within the depth limit."""
    item: dict = {"linkId": "leaf", "type": "string"}
    for i in range(30):
        item = {"linkId": f"g{i}", "type": "group", "item": [item]}
    r = client.post("/fhir/Questionnaire", data=json.dumps(
        {"resourceType": "Questionnaire", "status": "draft", "item": [item]}), headers=JSON)
    assert r.status_code == 201, r.data[:300]


@pytest.mark.parametrize("resource", [
    {"resourceType": "Patient", "contained": [{"resourceType": "Foo", "id": "a"}]},
    {"resourceType": "Patient", "contained": [{"resourceType": 7, "id": "a"}]},
    {"resourceType": "Patient", "name": [{"family": "a\u0000b"}]},      # NUL: PostgreSQL text cannot hold it
    {"resourceType": "Patient", "name": [{"family": "a\u0001b"}]},      # XML 1.0 cannot carry it
    {"resourceType": "Patient", "name": [{"family": "a\ufffeb"}]},
    {"resourceType": "Patient", "name": [{"family": "x" * (1024 * 1024 + 1)}]},
])
def test_values_no_format_can_give_back_are_refused_at_write(client, resource: dict) -> None:
    _seed(client)
    before = _snapshot(client)
    _refused(client.post("/fhir/Patient", data=json.dumps(resource), headers=JSON), 400, 413, 422)
    bundle = {"resourceType": "Bundle", "type": "transaction",
              "entry": [{"resource": resource, "request": {"method": "POST", "url": "Patient"}}]}
    _refused(client.post("/fhir", data=json.dumps(bundle), headers=JSON), 400, 413, 422)
    assert _snapshot(client) == before
    assert client.get("/fhir/Patient?_format=xml").status_code == 200  # every stored one reads as XML


def test_huge_numbers_are_refused_at_write_and_in_search(client) -> None:
    obs = ('{"resourceType":"Observation","status":"final","code":{"text":"x"},'
           '"valueQuantity":{"value":1e999999}}')
    _refused(client.post("/fhir/Observation", data=obs, headers=JSON), 422)
    for q in ("value-quantity=1e99999999", "value-quantity=1e-99999999"):
        _refused(client.get(f"/fhir/Observation?{q}", headers={"Prefer": "handling=strict"}), 400)


@pytest.mark.parametrize("query", [
    "name=a%00b", "_id=a%00b", "identifier=a%00b|c", "name%00=x", "subject=Patient/a%00",
])
def test_nul_in_search_values_is_refused(client, query: str) -> None:
    _seed(client)
    assert client.get("/fhir/Patient?name=Keep").json["total"] == 1
    _refused(client.get(f"/fhir/Patient?{query}"), 400)


@pytest.mark.parametrize("url,status", [
    ("/fhir/Patient/a%00/Observation", 404), ("/fhir/Patient/p1/Observation?code=%00", 400),
    ("/fhir/Patient?_type=%00", 400), ("/fhir/Patient?_format=xml&_count=%01", 400),
    ("/fhir/Patient/%01?_format=xml", 400), ("/fhir/Patient?_format=xml&_sort=%01", 400),
])
def test_refusals_quoting_bad_characters_are_still_written(client, url: str, status: int) -> None:
    """The OperationOutcome quoting a control character can itself be written, as XML too."""
    _seed(client)
    resp = client.get(url)
    assert resp.status_code == status, resp.data[:300]
    assert b"OperationOutcome" in resp.data


def test_conditional_writes_with_nul_are_refused(client) -> None:
    _seed(client)
    before = _snapshot(client)
    body = json.dumps({"resourceType": "Patient"})
    _refused(client.put("/fhir/Patient?identifier=a%00", data=body, headers=JSON), 400)
    _refused(client.post("/fhir/Patient", data=body, headers={**JSON, "If-None-Exist": "identifier=a\x00"}), 400)
    _refused(client.delete("/fhir/Patient?identifier=a%00"), 400)
    _refused(client.post("/fhir/Patient/_search", data="name=a%00",
                         headers={"Content-Type": "application/x-www-form-urlencoded"}), 400)
    assert _snapshot(client) == before


def test_reference_ids_longer_than_ids_find_nothing(client) -> None:
    _seed(client)
    for q in ("Observation?subject=Patient/" + "a" * 100, "Observation?subject=" + "a" * 100,
              "Observation?patient=" + "a" * 300):
        resp = client.get(f"/fhir/{q}")
        assert resp.status_code in (200, 400), resp.data[:300]
        if resp.status_code == 200:
            assert resp.json["total"] == 0


# -- limits ---------------------------------------------------------------------------------------
def test_repeated_search_parameters_are_limited(client) -> None:
    _seed(client)
    ok = "&".join(f"name:contains=k{i % 3}" for i in range(3))
    assert client.get(f"/fhir/Patient?{ok}").status_code == 200
    many = "&".join(f"birthdate=ge19{i % 90 + 10}" for i in range(200))
    t0 = time.monotonic()
    _refused(client.get(f"/fhir/Patient?{many}"), 400)
    assert time.monotonic() - t0 < 2
    _refused(client.get("/fhir/Patient?_id=" + ",".join(f"x{i}" for i in range(500))), 400)


def test_bundle_entries_are_limited(session_app, settings, make_app) -> None:
    app = make_app(settings.replace(max_bundle_entries=5))
    client = app.test_client()
    entry = {"request": {"method": "GET", "url": "Patient?_count=1"}}
    assert client.post("/fhir", data=json.dumps({"resourceType": "Bundle", "type": "batch",
                                                  "entry": [entry] * 5}), headers=JSON).status_code == 200
    for kind in ("batch", "transaction"):
        resp = client.post("/fhir", data=json.dumps({"resourceType": "Bundle", "type": kind, "entry": [entry] * 6}),
                           headers=JSON)
        _refused(resp, 413)


def test_body_size_is_limited(client, settings) -> None:
    body = json.dumps({"resourceType": "Patient", "text": {"status": "generated", "div": "x" * settings.max_body_bytes}})
    _refused(client.post("/fhir/Patient", data=body, headers=JSON), 413)


def test_count_is_capped(client, settings) -> None:
    _seed(client)
    resp = client.get("/fhir/Patient?_count=100000")
    assert resp.status_code == 200
    assert f"_count={settings.max_page_size}" in resp.json["link"][0]["url"]


def test_a_statement_past_its_budget_is_cancelled_with_503(settings, app, make_app) -> None:
    """A slow statement is cut at the budget and answered 503, and the server keeps serving."""
    slow_app = make_app(settings.replace(statement_seconds=0.3))
    client = slow_app.test_client()
    _seed(client)
    repo = slow_app.extensions["fhirserver"].repo
    from sqlalchemy import text

    slow = ("SELECT pg_sleep(2)" if repo.postgres else
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n")
    from fhirserver.interactions.limits import client_fault

    t0 = time.monotonic()
    with pytest.raises(Exception) as info:
        with repo.engine.connect() as conn:
            conn.execute(text(slow)).all()
    assert time.monotonic() - t0 < 1.5
    fault = client_fault(info.value)
    assert fault is not None and fault.status == 503
    assert client.get("/fhir/Patient/p1").status_code == 200  # the next request is served


# -- the HTTP front (real gunicorn) ---------------------------------------------------------------
@pytest.fixture(scope="module")
def server(session_app, database_url, tmp_path_factory):  # noqa: ANN001, ANN201
    srv = LiveServer(database_url, tmp_path_factory.mktemp("hostile"), workers=1)
    yield srv
    srv.stop()


def _raw(port: int, data: bytes, wait: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port)) as c:
        c.sendall(data)
        c.settimeout(wait)
        out = b""
        try:
            while chunk := c.recv(65536):
                out += chunk
        except (socket.timeout, ConnectionResetError):
            pass
    return out


def _status_and_body(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@pytest.mark.slow
@pytest.mark.parametrize("request_bytes,status", [
    (b"GET /fhir/Patient?x=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET /fhir/Patient HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(150)) + b"\r\n", 431),
    (b"GET /fhir/Patient HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
    (b"GARBAGE\r\n\r\n", 400),
    (b"POST /fhir/Patient HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\n"
     b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 400),
])
def test_what_the_http_server_refuses_is_an_operation_outcome(server, request_bytes: bytes, status: int) -> None:
    assert requests.get(server.base + "/Patient", timeout=10).status_code == 200
    code, body = _status_and_body(_raw(server.port, request_bytes))
    assert code == status
    assert body["resourceType"] == "OperationOutcome"


@pytest.mark.slow
def test_clients_sending_half_a_header_do_not_block_others(server) -> None:
    slow = []
    try:
        for _ in range(12):  # three times the worker's threads
            c = socket.create_connection(("127.0.0.1", server.port))
            c.sendall(b"GET /fhir/metadata HTTP/1.1\r\nHost: x\r\n")
            slow.append(c)
        time.sleep(0.5)
        for _ in range(3):
            t0 = time.monotonic()
            assert requests.get(server.base + "/Patient", timeout=10).status_code == 200
            assert time.monotonic() - t0 < 1.5
        slow[0].sendall(b"\r\n")  # a slow client that finishes is still answered
        slow[0].settimeout(5)
        assert slow[0].recv(100).startswith(b"HTTP/1.1 200")
        session = requests.Session()  # kept-alive connections still work
        for _ in range(10):
            assert session.get(server.base + "/Patient", timeout=10).status_code == 200
    finally:
        for c in slow:
            c.close()


# -- fuzz -----------------------------------------------------------------------------------------
_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12) | st.sampled_from(
    ["²", "٣", "9999-12-31", "0001-01-01", "ge9999-12-31T23:59:59-14:00", "99999999999999999999999",
     "1e999999", "NaN", "a\u0000b", "\u0001", "Patient/" + "a" * 80, "-1", "", "%", "\\", "|", ",,,", "*"])
_PARAMS = st.sampled_from(["name", "name:contains", "name:exact", "birthdate", "_lastUpdated", "_count", "_id",
                           "identifier", "gender", "_sort", "_page_after", "_page_before", "_include",
                           "general-practitioner", "_has:Observation:subject:code", "address-city", "_summary",
                           "_elements", "_total", "_format", "organization.name", "death-date"])
_PATHS = st.sampled_from(["Patient", "Patient/p1", "Patient/p1/_history", "Patient/p1/_history/1",
                          "Patient/p1/_history/²", "Observation", "Patient/p1/Observation", "_history", "metadata"])
_HEADERS = st.fixed_dictionaries({}, optional={
    "If-Match": _TEXT, "If-None-Match": _TEXT, "If-Modified-Since": _TEXT, "Prefer": _TEXT, "Accept": _TEXT})


@pytest.mark.slow
@hsettings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
           database=None)
@given(path=_PATHS, params=st.lists(st.tuples(_PARAMS, _TEXT), max_size=5), headers=_HEADERS,
       fmt=st.sampled_from([[], [("_format", "xml")], [("_format", "json")]]))
def test_fuzzed_reads_never_answer_500(fuzz_client, path: str, params: list, headers: dict, fmt: list) -> None:
    client, before = fuzz_client
    params = params + fmt
    resp = client.get(f"/fhir/{path}", query_string=params,
                      headers={k: _header(v) for k, v in headers.items()})
    assert resp.status_code < 500 or resp.status_code == 503, (path, params, headers, resp.data[:300])
    if resp.status_code >= 400:
        assert _is_outcome(resp)


def _header(value: str) -> str:
    """A header value as it arrives on the wire: UTF-8 bytes read as Latin-1, one line."""
    return value.replace("\r", " ").replace("\n", " ").encode("utf-8").decode("latin-1")


_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2 ** 70), 2 ** 70) | _TEXT | st.decimals(allow_nan=False, places=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3), max_leaves=10)
_KEYS = st.sampled_from(["name", "birthDate", "contained", "identifier", "extension", "id", "meta", "text",
                         "managingOrganization", "telecom", "resourceType", "deceasedDateTime", "_birthDate"])


def _json_default(o: object) -> object:
    return float(o)  # decimals from the strategy


@pytest.mark.slow
@hsettings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
           database=None)
@given(fields=st.dictionaries(_KEYS, _VALUES, max_size=4), method=st.sampled_from(["POST", "PUT", "BATCH"]))
def test_fuzzed_writes_never_answer_500(fuzz_client, fields: dict, method: str) -> None:
    client, before = fuzz_client
    resource = {"resourceType": "Patient", **fields}
    if method == "PUT":
        resource["id"] = "fuzz"
        resp = client.put("/fhir/Patient/fuzz", data=json.dumps(resource, default=_json_default), headers=JSON)
    elif method == "POST":
        resp = client.post("/fhir/Patient", data=json.dumps(resource, default=_json_default), headers=JSON)
    else:
        bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
            {"resource": resource, "request": {"method": "POST", "url": "Patient"}},
            {"request": {"method": "GET", "url": "Patient?" + "&".join(f"{k}=1" for k in fields)}}]}
        resp = client.post("/fhir", data=json.dumps(bundle, default=_json_default), headers=JSON)
    assert resp.status_code < 500, (resource, resp.data[:300])
    if resp.status_code >= 400:
        assert _is_outcome(resp)
    stored = client.get("/fhir/Patient/p1")
    assert stored.status_code == 200 and stored.json == before  # the seeded Patient is untouched
    assert client.get("/fhir/Patient?_count=1000&_format=xml").status_code == 200  # all stored read as XML


@pytest.fixture()
def fuzz_client(client):  # noqa: ANN001, ANN201
    """One seeded database for all examples of a fuzz test (hypothesis reuses function fixtures)."""
    seeded = _seed(client)
    return client, seeded


@pytest.mark.parametrize("url", ["/dicomweb/studies?limit=99999999999999999999", "/dicomweb/studies?offset=%C2%B2",
                                 "/dicomweb/studies?limit=%D9%A3"])
def test_dicomweb_paging_numbers_outside_64_bits_are_refused(client, url: str) -> None:
    assert client.get("/dicomweb/studies?limit=5").status_code in (200, 204)
    assert client.get(url).status_code == 400
