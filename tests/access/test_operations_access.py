"""The access gate on operations, seen from the callers: what each operation needs, what $erase
keeps of other patients, $merge across organizations, the owned-profile delete rule at every
delete entry point, and the access log as a patient. Every refusal first shows the same request
succeeding for the caller's own data."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from smart_auth import store
from tests.conftest import app_fixture, emptied, run_smtp_server
from tests.lifecycle.lc_helpers import LIFECYCLE_TABLES, H, PATIENT_SCOPE, STAFF_SCOPE, link_in, login, params, pval

PW = "staffpass123"
READ_ONLY = "openid fhirUser user/*.rs"


@pytest.fixture(scope="module")
def ops_smtp():  # noqa: ANN201
    yield from run_smtp_server()


@pytest.fixture(scope="module")
def ops_session_app(settings, session_app, ops_smtp, open_apps):  # noqa: ANN001, ANN201
    yield from app_fixture(settings.replace(insecure_no_auth=False, smtp_url=ops_smtp.url), open_apps)


@pytest.fixture()
def oapp(ops_session_app, app, ops_smtp):  # noqa: ANN001, ANN201
    """Auth-on app on an emptied database, with two clinics (o1: d1, o2: d2) and an admin."""
    eng = emptied(ops_session_app, LIFECYCLE_TABLES, ops_smtp).extensions["fhirserver"].repo.engine
    with ops_session_app.extensions["fhirserver"].repo.transaction(write=True) as tx:
        for o in ("o1", "o2"):
            tx.update("Organization", o, {"resourceType": "Organization", "id": o, "name": f"Clinic {o}"})
        for pr in ("d1", "d2"):
            tx.update("Practitioner", pr, {"resourceType": "Practitioner", "id": pr, "name": [{"family": pr}]})
    for n, org in (("d1", "o1"), ("d2", "o2")):
        store.add_user(eng, username=n, password=PW, role="staff", fhir_user=f"Practitioner/{n}", organizations=[org])
    store.add_user(eng, username="root", password=PW, role="admin")
    return ops_session_app


def _tok(app, user: str, scope: str = STAFF_SCOPE) -> dict:  # noqa: ANN001
    return login(app.test_client(), app.extensions["fhirserver"].repo.engine, user, PW, scope)


def _post(c, tok, body) -> dict:  # noqa: ANN001
    r = c.post(f"/fhir/{body['resourceType']}", json=body, headers=H(tok))
    assert r.status_code == 201, r.get_data(as_text=True)
    return r.get_json()


def _patient(c, tok, org, family, email=None, **extra) -> str:  # noqa: ANN001
    body = {"resourceType": "Patient", "name": [{"given": ["Pat"], "family": family}],
            "managingOrganization": {"reference": f"Organization/{org}"}, **extra}
    if email:
        body["telecom"] = [{"system": "email", "value": email}]
    return _post(c, tok, body)["id"]


def _activate(c, mailbox, email) -> None:  # noqa: ANN001
    path = link_in(mailbox.to(email)[-1]["body"]).split("testserver", 1)[-1]
    r = c.post("/auth/activate", data={"token": path.split("token=")[1], "password": "mypassword1",
                                       "mobile": "+34 600 111 222", "security_question": "Pet?",
                                       "security_answer": "Rex"})
    assert r.status_code == 200, r.get_data(as_text=True)


def _own_account(app, c, mailbox, tok, pid, email) -> dict:  # noqa: ANN001
    r = c.post(f"/fhir/Patient/{pid}/$invite", json=params(password=PW), headers=H(tok))
    assert r.status_code == 200, r.get_data(as_text=True)
    _activate(c, mailbox, email)
    return login(c, app.extensions["fhirserver"].repo.engine, email, "mypassword1", PATIENT_SCOPE)


def _count(app, sql: str, **kw) -> int:  # noqa: ANN001
    with app.extensions["fhirserver"].repo.engine.connect() as conn:
        return conn.execute(text(sql), kw).scalar_one()


def _state(app) -> tuple[int, int, int]:  # noqa: ANN001
    """What a refused request must leave untouched: versions, current rows, reserved emails (the
    AuditEvent recording the refusal aside)."""
    return (_count(app, "SELECT count(*) FROM resource_history WHERE res_type <> 'AuditEvent'"),
            _count(app, "SELECT count(*) FROM resource WHERE res_type <> 'AuditEvent'"),
            _count(app, "SELECT count(*) FROM lifecycle_email"))


# -- what operations need ------------------------------------------------------------------------------
def test_erase_needs_write_scopes_and_a_staff_or_admin_principal(oapp):  # noqa: ANN001
    c = oapp.test_client()
    d1 = _tok(oapp, "d1")
    mine = _patient(c, d1, "o1", "Mine")
    other = _patient(c, d1, "o1", "Other")
    _post(c, d1, {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                  "subject": {"reference": f"Patient/{other}"}})
    # own success first: staff with write scopes erase a patient of their organization
    r = c.post(f"/fhir/Patient/{mine}/$erase", headers=H(d1))
    assert r.status_code == 200, r.get_data(as_text=True)
    assert c.get(f"/fhir/Patient/{mine}", headers=H(d1)).status_code == 404
    # the same staff member with a read-only token: refused, nothing erased
    ro = _tok(oapp, "d1", READ_ONLY)
    assert c.get(f"/fhir/Patient/{other}", headers=H(ro)).status_code == 200
    before = _state(oapp)
    r = c.post(f"/fhir/Patient/{other}/$erase", headers=H(ro))
    assert r.status_code == 403 and r.get_json()["resourceType"] == "OperationOutcome"
    assert _state(oapp) == before
    assert c.get(f"/fhir/Patient/{other}", headers=H(d1)).status_code == 200
    # $merge likewise needs write scopes
    third = _patient(c, d1, "o1", "Third")
    p = params(source_patient={"reference": f"Patient/{other}"}, target_patient={"reference": f"Patient/{third}"})
    assert c.post("/fhir/Patient/$merge", json={**p, "parameter": [*p["parameter"], {"name": "preview", "valueBoolean": True}]},
                  headers=H(d1)).status_code == 200
    before = _state(oapp)
    assert c.post("/fhir/Patient/$merge", json=p, headers=H(ro)).status_code == 403
    assert _state(oapp) == before
    # a backend client of the organization is not a staff principal
    cid = store.add_client(oapp.extensions["fhirserver"].repo.engine, name="ehr", redirect_uris=[],
                           scope="system/*.cruds", organization="o1", grant_types=["client_credentials"],
                           auth_method="client_secret_post")
    tok = c.post("/auth/token", data={"grant_type": "client_credentials", "client_id": cid["client_id"],
                                      "client_secret": cid["client_secret"], "scope": "system/*.cruds"})
    assert tok.status_code == 200, tok.get_data(as_text=True)
    sys_h = H(tok.get_json())
    assert c.get(f"/fhir/Patient/{other}", headers=sys_h).status_code == 200
    assert c.post(f"/fhir/Patient/{other}/$erase", headers=sys_h).status_code == 403
    assert c.post("/fhir/$reindex", headers=sys_h).status_code == 403  # bound to an organization
    assert c.post("/fhir/$reindex", headers=H(d1)).status_code == 403
    assert c.post("/fhir/$reindex", headers=H(_tok(oapp, "root"))).status_code == 200
    assert c.get(f"/fhir/Patient/{other}", headers=H(d1)).status_code == 200


def test_a_patient_erases_their_record_only_with_write_scopes(oapp, ops_smtp):  # noqa: ANN001
    c = oapp.test_client()
    d1 = _tok(oapp, "d1")
    a = _patient(c, d1, "o1", "Alpha", email="alpha@example.org")
    b = _patient(c, d1, "o1", "Beta")
    pa = _own_account(oapp, c, ops_smtp, d1, a, "alpha@example.org")
    engine = oapp.extensions["fhirserver"].repo.engine
    read_only = login(c, engine, "alpha@example.org", "mypassword1", "openid fhirUser launch/patient patient/*.read")
    assert c.get(f"/fhir/Patient/{a}", headers=H(read_only)).status_code == 200
    before = _state(oapp)
    assert c.post(f"/fhir/Patient/{a}/$erase", headers=H(read_only)).status_code == 403
    assert c.post(f"/fhir/Patient/{b}/$erase", headers=H(pa)).status_code in (403, 404)  # not theirs
    assert _state(oapp) == before
    r = c.post(f"/fhir/Patient/{a}/$erase", headers=H(pa))  # the same request with write scopes
    assert r.status_code == 200, r.get_data(as_text=True)
    assert c.get(f"/fhir/Patient/{a}", headers=H(d1)).status_code == 404
    assert c.get(f"/fhir/Patient/{b}", headers=H(d1)).status_code == 200


def test_patient_operations_are_for_the_patient(oapp, ops_smtp):  # noqa: ANN001
    c = oapp.test_client()
    d1 = _tok(oapp, "d1")
    a = _patient(c, d1, "o1", "Alpha", email="alpha@example.org")
    pa = _own_account(oapp, c, ops_smtp, d1, a, "alpha@example.org")
    # the patient lists their access requests and connected apps; staff who see the patient may not
    assert c.post(f"/fhir/Patient/{a}/$access-requests", headers=H(pa)).status_code == 200
    assert c.get(f"/fhir/Patient/{a}/$connected-apps", headers=H(pa)).status_code == 200
    assert c.post(f"/fhir/Patient/{a}/$access-requests", headers=H(d1)).status_code == 403
    assert c.get(f"/fhir/Patient/{a}/$connected-apps", headers=H(d1)).status_code == 403
    # and a patient may not run staff operations on themself
    assert c.post(f"/fhir/Patient/{a}/$unlink", headers=H(pa)).status_code == 403
    p = params(source_patient={"reference": f"Patient/{a}"}, target_patient={"reference": f"Patient/{a}"})
    assert c.post("/fhir/Patient/$merge", json=p, headers=H(pa)).status_code == 403


# -- $erase keeps what other patients share --------------------------------------------------------------
def test_erase_leaves_shared_resources_without_the_patient(oapp):  # noqa: ANN001
    c = oapp.test_client()
    d1 = _tok(oapp, "d1")
    a = _patient(c, d1, "o1", "Erasedname")
    b = _patient(c, d1, "o1", "Keptname", link=[{"other": {"reference": f"Patient/{a}"}, "type": "seealso"}])
    ra, rb = ({"reference": f"Patient/{a}", "display": "Erasedname"}, {"reference": f"Patient/{b}"})
    rp_b = _post(c, d1, {"resourceType": "RelatedPerson", "patient": rb, "name": [{"family": "Parent"}]})["id"]
    group = _post(c, d1, {"resourceType": "Group", "type": "person", "actual": True,
                          "member": [{"entity": ra}, {"entity": rb}]})["id"]
    team = _post(c, d1, {"resourceType": "CareTeam", "status": "active", "subject": rb,
                         "participant": [{"member": ra}, {"member": rb}, {"member": {"reference": "Practitioner/d1"}}]})["id"]
    appt = _post(c, d1, {"resourceType": "Appointment", "status": "booked", "participant": [
        {"actor": ra, "status": "accepted"}, {"actor": rb, "status": "accepted"},
        {"actor": {"reference": "Practitioner/d1"}, "status": "accepted"}]})["id"]
    note = _post(c, d1, {"resourceType": "Communication", "status": "completed", "subject": ra,
                         "recipient": [{"reference": f"RelatedPerson/{rp_b}"}]})["id"]
    alone = _post(c, d1, {"resourceType": "Appointment", "status": "booked", "participant": [
        {"actor": ra, "status": "accepted"}, {"actor": {"reference": "Practitioner/d1"}, "status": "accepted"}]})["id"]
    obs = _post(c, d1, {"resourceType": "Observation", "status": "final", "code": {"text": "a's"}, "subject": ra})["id"]
    # A's own record goes; B's record and what B shares with A stay
    r = c.post(f"/fhir/Patient/{a}/$erase", headers=H(d1))
    assert r.status_code == 200, r.get_data(as_text=True)
    out = r.get_json()
    reported = {p["valueReference"]["reference"] for p in out["parameter"] if p["name"] == "updated-resource"}
    assert {r for r in reported if not r.startswith("AuditEvent/")} == {  # and the AuditEvents naming both
        f"Group/{group}", f"CareTeam/{team}", f"Appointment/{appt}", f"Communication/{note}", f"Patient/{b}"}
    assert pval(out, "updated") == len(reported) and pval(out, "kept") == 0
    for gone in (f"Patient/{a}", f"Observation/{obs}", f"Appointment/{alone}"):
        assert c.get(f"/fhir/{gone}", headers=H(d1)).status_code == 404, gone
    assert c.get(f"/fhir/Patient/{b}", headers=H(d1)).status_code == 200
    assert c.get(f"/fhir/RelatedPerson/{rp_b}", headers=H(d1)).status_code == 200
    g = c.get(f"/fhir/Group/{group}", headers=H(d1)).get_json()
    assert g["member"] == [{"entity": rb}]
    t = c.get(f"/fhir/CareTeam/{team}", headers=H(d1)).get_json()
    assert [p["member"]["reference"] for p in t["participant"]] == [f"Patient/{b}", "Practitioner/d1"]
    ap = c.get(f"/fhir/Appointment/{appt}", headers=H(d1)).get_json()
    assert [p["actor"]["reference"] for p in ap["participant"]] == [f"Patient/{b}", "Practitioner/d1"]
    assert "subject" not in c.get(f"/fhir/Communication/{note}", headers=H(d1)).get_json()
    assert "link" not in c.get(f"/fhir/Patient/{b}", headers=H(d1)).get_json()
    # no version of the shared resources still names A, and searches no longer find them by A
    for ref in (f"Group/{group}", f"CareTeam/{team}", f"Appointment/{appt}", f"Communication/{note}", f"Patient/{b}"):
        hist = c.get(f"/fhir/{ref}/_history", headers=H(d1)).get_data(as_text=True)
        assert f"Patient/{a}" not in hist and "Erasedname" not in hist, ref
    assert c.get(f"/fhir/Group?member=Patient/{a}", headers=H(d1)).get_json()["total"] == 0
    assert c.get(f"/fhir/Group?member=Patient/{b}", headers=H(d1)).get_json()["total"] == 1
    assert _count(oapp, "SELECT count(*) FROM resource_history WHERE res_id = :a", a=a) == 0


# -- $merge stays inside the caller's organization ---------------------------------------------------------
def test_merge_across_organizations_is_refused(oapp):  # noqa: ANN001
    c = oapp.test_client()
    d1, d2, root = _tok(oapp, "d1"), _tok(oapp, "d2"), _tok(oapp, "root")
    s1 = _patient(c, d1, "o1", "Source")
    t1 = _patient(c, d1, "o1", "Target")
    rep = _post(c, d1, {"resourceType": "DiagnosticReport", "status": "final", "code": {"text": "x"},
                        "subject": {"reference": f"Patient/{s1}/"}})["id"]  # a trailing-slash spelling
    far = _patient(c, d2, "o2", "Far")
    group = _post(c, root, {"resourceType": "Group", "type": "person", "actual": True, "member": [
        {"entity": {"reference": f"Patient/{s1}"}}, {"entity": {"reference": f"Patient/{far}"}}]})["id"]
    assert c.get(f"/fhir/Group/{group}", headers=H(d1)).status_code == 404  # it names o2's patient too
    # own success first: d1 merges two patients of o1; only what d1 sees moves
    p = params(source_patient={"reference": f"Patient/{s1}"}, target_patient={"reference": f"Patient/{t1}"})
    r = c.post("/fhir/Patient/$merge", json=p, headers=H(d1))
    assert r.status_code == 200, r.get_data(as_text=True)
    moved = {x["valueReference"]["reference"] for x in r.get_json()["parameter"] if x["name"] == "moved"}
    assert moved == {f"DiagnosticReport/{rep}"}
    assert c.get(f"/fhir/DiagnosticReport/{rep}", headers=H(d1)).get_json()["subject"] == {"reference": f"Patient/{t1}"}
    assert c.get(f"/fhir/Group/{group}", headers=H(root)).get_json()["member"][0] == {"entity": {"reference": f"Patient/{s1}"}}
    # across organizations: d1 sees s2 but not o2's patient, d2 the other way round
    s2 = _patient(c, d1, "o1", "Source2")
    other = _patient(c, d2, "o2", "Elsewhere")
    obs = _post(c, d1, {"resourceType": "Observation", "status": "final", "code": {"text": "y"},
                        "subject": {"reference": f"Patient/{s2}"}})["id"]
    before = _state(oapp)
    for tok, src, tgt in ((d1, s2, other), (d1, other, s2), (d2, s2, other), (d2, other, s2)):
        p = params(source_patient={"reference": f"Patient/{src}"}, target_patient={"reference": f"Patient/{tgt}"})
        r = c.post("/fhir/Patient/$merge", json=p, headers=H(tok))
        assert r.status_code in (403, 404) and r.get_json()["resourceType"] == "OperationOutcome"
        r = c.post("/fhir/Patient/$merge", json={**p, "parameter": [*p["parameter"], {"name": "preview", "valueBoolean": True}]},
                   headers=H(tok))
        assert r.status_code in (403, 404)
    assert _state(oapp) == before
    assert c.get(f"/fhir/Observation/{obs}", headers=H(d1)).get_json()["subject"] == {"reference": f"Patient/{s2}"}
    assert c.get(f"/fhir/Patient/{other}", headers=H(d2)).get_json().get("link") is None


# -- the owned-profile rule at every delete entry point -------------------------------------------------
def test_owned_profile_cannot_be_deleted_by_staff_by_any_route(oapp, ops_smtp):  # noqa: ANN001
    c = oapp.test_client()
    d1 = _tok(oapp, "d1")
    ident = {"system": "urn:mrn", "value": "OWNED-1"}
    owned = _patient(c, d1, "o1", "Owned", email="owned@example.org", identifier=[ident])
    pt = _own_account(oapp, c, ops_smtp, d1, owned, "owned@example.org")
    assert c.get(f"/fhir/Patient/{owned}", headers=H(pt)).status_code == 200
    # own success first: staff delete profiles nobody owns, alone, in a transaction and conditionally
    plain = _patient(c, d1, "o1", "Plain", email="plain@example.org")
    assert c.delete(f"/fhir/Patient/{plain}", headers=H(d1)).status_code in (200, 204)
    in_bundle = _patient(c, d1, "o1", "Bundled", email="bundled@example.org")
    tx_bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "DELETE", "url": f"Patient/{in_bundle}"}}]}
    r = c.post("/fhir", json=tx_bundle, headers=H(d1))
    assert r.status_code == 200, r.get_data(as_text=True)
    cond = _patient(c, d1, "o1", "Cond", email="cond@example.org", identifier=[{"system": "urn:mrn", "value": "COND-1"}])
    assert c.delete("/fhir/Patient?identifier=urn:mrn|COND-1", headers=H(d1)).status_code in (200, 204)
    for pid in (plain, in_bundle, cond):
        assert c.get(f"/fhir/Patient/{pid}", headers=H(d1)).status_code in (404, 410)
    # their emails stay reserved, written by the delete itself
    assert _count(oapp, "SELECT count(*) FROM lifecycle_email WHERE status = 'deleted'") == 3
    # the owned profile: refused by each route, and nothing written
    victim = _patient(c, d1, "o1", "Victim", email="victim@example.org")
    before = _state(oapp)
    r = c.delete(f"/fhir/Patient/{owned}", headers=H(d1))
    assert r.status_code == 403 and "$unlink" in r.get_data(as_text=True)
    r = c.delete("/fhir/Patient?identifier=urn:mrn|OWNED-1", headers=H(d1))
    assert r.status_code == 403, r.get_data(as_text=True)
    tx_bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "DELETE", "url": f"Patient/{victim}"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "z"},
                      "subject": {"reference": f"Patient/{owned}"}},
         "request": {"method": "POST", "url": "Observation"}},
        {"request": {"method": "DELETE", "url": f"Patient/{owned}"}}]}
    r = c.post("/fhir", json=tx_bundle, headers=H(d1))
    assert r.status_code == 403, r.get_data(as_text=True)
    cond_bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "DELETE", "url": "Patient?identifier=urn:mrn|OWNED-1"}}]}
    assert c.post("/fhir", json=cond_bundle, headers=H(d1)).status_code == 403
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "DELETE", "url": f"Patient/{owned}"}}]}
    r = c.post("/fhir", json=batch, headers=H(d1))
    assert r.status_code == 200 and r.get_json()["entry"][0]["response"]["status"].startswith("403")
    r = c.post(f"/fhir/Patient/{owned}/$erase", headers=H(d1))
    assert r.status_code == 403
    assert _state(oapp) == before  # not the victim's delete, not its email reservation, no Observation
    assert c.get(f"/fhir/Patient/{victim}", headers=H(d1)).status_code == 200
    assert c.get(f"/fhir/Patient/{owned}", headers=H(d1)).status_code == 200
    # the patient owning it may delete it
    assert c.delete(f"/fhir/Patient/{owned}", headers=H(pt)).status_code in (200, 204)


# -- the access log as a patient -------------------------------------------------------------------------
def _audit(app, *pids) -> str:  # noqa: ANN001
    """An AuditEvent naming these patients, written by the server (clients cannot write them)."""
    with app.extensions["fhirserver"].repo.transaction(write=True) as tx:
        return tx.create("AuditEvent", {
        "resourceType": "AuditEvent", "recorded": "2026-01-01T10:00:00Z",
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
        "agent": [{"who": {"reference": "Practitioner/d1"}, "requestor": True}],
        "source": {"observer": {"display": "test"}},
        "entity": [{"what": {"reference": f"Patient/{p}"}} for p in pids]}).res_id


def test_access_log_of_a_patient_does_not_show_events_naming_others(oapp, ops_smtp):  # noqa: ANN001
    c = oapp.test_client()
    d1 = _tok(oapp, "d1")
    a = _patient(c, d1, "o1", "Alpha", email="alpha@example.org")
    b = _patient(c, d1, "o1", "Beta")
    pa = _own_account(oapp, c, ops_smtp, d1, a, "alpha@example.org")
    mine = _audit(oapp, a)
    both = _audit(oapp, a, b)
    theirs = _audit(oapp, b)
    # own success first: A's log lists the event about A alone
    r = c.get(f"/fhir/Patient/{a}/$access-log", headers=H(pa))
    assert r.status_code == 200, r.get_data(as_text=True)
    ids = {e["resource"]["id"] for e in r.get_json().get("entry", [])}
    assert mine in ids
    assert both not in ids and theirs not in ids
    assert f"Patient/{b}" not in r.get_data(as_text=True)
    # the same through a search and a read
    found = {e["resource"]["id"] for e in c.get("/fhir/AuditEvent?_count=200", headers=H(pa)).get_json().get("entry", [])}
    assert mine in found and both not in found and theirs not in found
    assert c.get(f"/fhir/AuditEvent/{mine}", headers=H(pa)).status_code == 200
    assert c.get(f"/fhir/AuditEvent/{both}", headers=H(pa)).status_code == 404
    # and B's log is not A's to read
    assert c.get(f"/fhir/Patient/{b}/$access-log", headers=H(pa)).status_code in (403, 404)
    # staff of the organization see every event of their patients
    r = c.get(f"/fhir/Patient/{a}/$access-log", headers=H(d1))
    assert {mine, both} <= {e["resource"]["id"] for e in r.get_json()["entry"]}
    d2 = _tok(oapp, "d2")
    assert c.get(f"/fhir/AuditEvent/{both}", headers=H(d2)).status_code == 404
    assert json.dumps(c.get("/fhir/AuditEvent", headers=H(d2)).get_json()).count(f"Patient/{a}") == 0
    assert _count(oapp, "SELECT count(*) FROM resource WHERE res_type = 'AuditEvent'") >= 3


# -- the declarations themselves ---------------------------------------------------------------------------
def test_every_operation_declares_what_it_needs():
    from fhirserver.access import OPERATION_NEEDS
    from fhirserver.operations import build_registry

    assert set(build_registry().handlers) <= set(OPERATION_NEEDS)


@pytest.mark.parametrize(("role", "scope", "op", "allowed"), [
    ("staff", "user/*.cruds", "$erase", True),
    ("staff", "user/*.rs", "$erase", False),
    ("staff", "user/Patient.cruds", "$erase", False),  # erasure touches every type
    ("patient", "patient/*.cruds", "$erase", True),
    ("patient", "patient/*.read", "$erase", False),
    ("guardian", "patient/*.cruds", "$erase", False),
    ("system", "system/*.cruds", "$merge", False),
    ("staff", "user/*.write", "$merge", True),
    ("admin", "user/*.cruds", "$merge", True),
    ("patient", "patient/*.cruds", "$merge", False),
    ("patient", "patient/*.rs", "$access-log", True),
    ("patient", "patient/Patient.rs", "$access-log", False),  # AuditEvents need their own scope
    ("staff", "user/*.cruds", "$connected-apps", False),
    ("patient", "patient/*.rs", "$everything", True),
    ("staff", "user/*.cruds", "$reindex", False),
    ("admin", "user/*.cruds", "$reindex", True),
    ("staff", "user/*.cruds", "$no-such-operation", False),
])
def test_operation_needs(role, scope, op, allowed):  # noqa: ANN001
    from fhirserver.access import Principal, SmartPolicy, parse_scopes
    from fhirserver.errors import FhirError

    policy = SmartPolicy(Principal(client_id="c", role=role, scopes=tuple(parse_scopes(scope.split())),
                                   patients=("p1",), organizations=("o1",) if role in ("staff", "system") else ()))
    try:
        policy.check_operation(op, "Patient")
    except FhirError as exc:
        assert not allowed and exc.status == 403
    else:
        assert allowed


def test_the_managing_organization_answers_access_requests_until_the_patient_owns_the_profile(oapp, ops_smtp):  # noqa: ANN001, E501
    """A profile nobody has activated is the organization's to control: its staff list and answer
    the access requests; another organization's staff cannot; once the patient activates an
    account, the profile is theirs and staff are refused."""
    c = oapp.test_client()
    d1, d2 = _tok(oapp, "d1"), _tok(oapp, "d2")
    a = _patient(c, d1, "o1", "Alpha", email="alpha@example.org")
    r = c.post("/fhir/Patient/$request-access", json=params(email="alpha@example.org"), headers=H(d2))
    assert r.status_code == 200, r.get_data(as_text=True)
    r = c.post(f"/fhir/Patient/{a}/$access-requests", headers=H(d1))
    assert r.status_code == 200
    rq = r.get_json()["parameter"][0]["part"][0]["valueString"]
    # the asking organization cannot answer its own request (it does not see the patient)
    answer = params(request=rq, decision="accept")
    assert c.post(f"/fhir/Patient/{a}/$respond-access", json=answer, headers=H(d2)).status_code == 404
    assert c.post(f"/fhir/Patient/{a}/$access-requests", headers=H(d2)).status_code == 404
    assert c.get(f"/fhir/Patient/{a}", headers=H(d2)).status_code == 404
    r = c.post(f"/fhir/Patient/{a}/$respond-access", json=answer, headers=H(d1))
    assert r.status_code == 200, r.get_data(as_text=True)
    assert c.get(f"/fhir/Patient/{a}", headers=H(d2)).status_code == 200  # shared now
    # the patient activates an account: from then on only they answer
    c.post("/fhir/Patient/$request-access", json=params(email="alpha@example.org", scope="all"), headers=H(d2))
    pa = _own_account(oapp, c, ops_smtp, d1, a, "alpha@example.org")
    assert c.post(f"/fhir/Patient/{a}/$access-requests", headers=H(d1)).status_code == 403
    r = c.post(f"/fhir/Patient/{a}/$access-requests", headers=H(pa))
    assert r.status_code == 200 and r.get_json()["parameter"]
