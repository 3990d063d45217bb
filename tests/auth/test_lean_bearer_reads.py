"""Bearer reads on the lean path (fhirserver.api.lean): the access gate still decides each one,
a revoked token is refused on its next request, and each read is audited."""
from __future__ import annotations

import uuid

from fhirserver.api.lean import LeanReads
from smart_auth import store
from smart_helpers import bearer, seed


def _token(engine, scope: str, context: dict) -> str:  # noqa: ANN001
    tok, _ = store.save_token(engine, kind="access", grant_id=uuid.uuid4().hex, client_id="app",
                              user_pk=None, scope=scope, context=context, lifetime=600)
    return tok


def _spy(app) -> list[bool]:  # noqa: ANN001
    lean = app.wsgi_app
    assert isinstance(lean, LeanReads)
    seen: list[bool] = []
    orig = type(lean)._try

    def spy(environ):  # noqa: ANN001, ANN202
        got = orig(lean, environ)
        seen.append(got is not None)
        return got

    lean._try = spy
    return seen


def test_patient_token_reads_its_own_data_only(sapp, engine, open_client):  # noqa: ANN001
    seed(open_client, [{"resourceType": "Patient", "id": "pa"}, {"resourceType": "Patient", "id": "pb"},
                       {"resourceType": "Observation", "id": "oa", "status": "final", "code": {"text": "x"},
                        "subject": {"reference": "Patient/pa"}},
                       {"resourceType": "Observation", "id": "ob", "status": "final", "code": {"text": "x"},
                        "subject": {"reference": "Patient/pb"}}])
    h = bearer(_token(engine, "patient/*.rs", {"role": "patient", "patient": "pa", "patients": ["pa"]}))
    c = sapp.test_client()
    seen = _spy(sapp)
    try:
        for _ in range(2):  # the first read checks the token in the database, the others in the cache
            assert c.get("/fhir/Patient/pa", headers=h).status_code == 200
            assert c.get("/fhir/Observation/oa", headers=h).status_code == 200
            assert c.get("/fhir/Observation/oa/_history/1", headers=h).status_code == 200
        assert all(seen) and len(seen) == 6
        seen.clear()
        # another patient's data: the gate's conditions keep it out of the lean answer; the full
        # path then says 404, as for a resource that does not exist
        assert c.get("/fhir/Patient/pb", headers=h).status_code == 404
        assert c.get("/fhir/Observation/ob", headers=h).status_code == 404
        assert c.get("/fhir/Observation/ob/_history/1", headers=h).status_code == 404
        assert seen == [False, False, False]
    finally:
        del sapp.wsgi_app._try


def test_scopes_and_revocation_still_decide(sapp, engine, open_client):  # noqa: ANN001
    seed(open_client, [{"resourceType": "Patient", "id": "pa"},
                       {"resourceType": "Observation", "id": "oa", "status": "final", "code": {"text": "x"},
                        "subject": {"reference": "Patient/pa"}}])
    tok = _token(engine, "patient/Patient.rs", {"role": "patient", "patient": "pa", "patients": ["pa"]})
    c = sapp.test_client()
    assert c.get("/fhir/Patient/pa", headers=bearer(tok)).status_code == 200
    assert c.get("/fhir/Observation/oa", headers=bearer(tok)).status_code == 403  # no Observation scope
    assert c.get("/fhir/Patient/pa", headers=bearer(tok)).status_code == 200  # cached, lean
    with sapp.app_context():  # as the server revokes: it answers once its own listener heard the revocation
        store.revoke_token(engine, store.find_token(engine, tok))
    r = c.get("/fhir/Patient/pa", headers=bearer(tok))
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    assert "revoked" in r.headers["WWW-Authenticate"]
    r = c.get("/fhir/Patient/pa")
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == 'Bearer realm="fhirserver"'
    r = c.get("/fhir/Patient/pa", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == 'Bearer realm="fhirserver"'


def test_lean_reads_are_audited(sapp, engine, open_client):  # noqa: ANN001
    seed(open_client, [{"resourceType": "Patient", "id": "pa"}])
    tok = _token(engine, "system/*.rs", {"role": "system"})
    c = sapp.test_client()
    seen = _spy(sapp)
    try:
        for rid in ("req-1", "req-2", "req-3"):
            assert c.get("/fhir/Patient/pa", headers={**bearer(tok), "X-Request-ID": rid}).status_code == 200
        assert seen == [True, True, True]
    finally:
        del sapp.wsgi_app._try
    sapp.extensions["fhirserver"].audit.flush()
    for rid in ("req-1", "req-2", "req-3"):
        b = open_client.get(f"/fhir/AuditEvent?entity-name={rid}").json
        assert b["total"] == 1, rid
        ev = b["entry"][0]["resource"]
        assert ev["subtype"][0]["code"] == "read" and ev["action"] == "R"
        assert {"reference": "Patient/pa"} in [e["what"] for e in ev["entity"]]
        assert ev["agent"][0]["altId"] == "app"


def test_lean_searches_keep_to_the_callers_data(sapp, engine, open_client):  # noqa: ANN001
    """Searches answered before Flask: a patient's token finds its own data, never another
    patient's; another organization's staff token finds nothing of this clinic."""
    from smart_helpers import ids, standard_data

    seed(open_client, standard_data())
    c = sapp.test_client()
    seen = _spy(sapp)
    try:
        pa = bearer(_token(engine, "patient/*.rs", {"role": "patient", "patient": "a", "patients": ["a"]}))
        c.get("/fhir/Patient/a", headers=pa)  # the token's first check is in the database
        seen.clear()
        assert ids(c.get("/fhir/Observation?status=final", headers=pa).get_json()) == \
            {"obs-a-laboratory", "obs-a-vital-signs"}
        assert ids(c.get("/fhir/Observation?subject=Patient/b", headers=pa).get_json()) == set()
        assert ids(c.get("/fhir/Patient?family=Doe", headers=pa).get_json()) == {"a"}
        got = c.get("/fhir/Observation?subject=Patient/a&_include=Observation:subject", headers=pa).get_json()
        assert ids(got) == {"obs-a-laboratory", "obs-a-vital-signs", "a"}
        assert all(seen) and len(seen) == 4  # all four answered by the lean layer

        staff1 = bearer(_token(engine, "user/*.rs", {"role": "staff", "organizations": ["org1"], "patients": [],
                                                      "fhirUser": "Practitioner/doc1"}))
        staff2 = bearer(_token(engine, "user/*.rs", {"role": "staff", "organizations": ["org2"], "patients": [],
                                                      "fhirUser": "Practitioner/doc1"}))
        assert ids(c.get("/fhir/Patient?family=Doe", headers=staff1).get_json()) == {"a", "b"}
        assert ids(c.get("/fhir/Patient?family=Doe", headers=staff2).get_json()) == {"c"}
        assert ids(c.get("/fhir/Observation?subject=Patient/a", headers=staff2).get_json()) == set()
        assert c.get("/fhir/Patient?family=Doe", headers=bearer("not-a-token")).status_code == 401
    finally:
        del sapp.wsgi_app._try
