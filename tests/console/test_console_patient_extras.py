"""The patient page's notes, meetings, new reports from chosen data, report QR codes, access
requests, image thumbnails and reactivation after an unlink, through the Flask test client as
staff of two organizations: each action succeeds on the staff member's own patient first, then
the same request by the other organization's staff (and by a patient) is refused."""
from __future__ import annotations

import re

from console_helpers import csrf_of, login, post, put, read, search_all
from web_helpers import portal_login


def _loc(r) -> str:  # noqa: ANN001
    return r.headers.get("Location", "")


def test_notes_are_written_and_shown_to_the_own_organization_only(capp, moreno, harbor):  # noqa: ANN001
    r = post(moreno, "/console/patients/demo-ana/notes", {"note": "Prefers morning visits; anxious with X-rays."})
    assert r.status_code == 303 and _loc(r).endswith("/console/patients/demo-ana")
    page = moreno.get("/console/patients/demo-ana").text
    assert "Prefers morning visits; anxious with X-rays." in page and "The note was saved." in page
    notes = [d for d in search_all(capp, "DocumentReference") if d.get("type", {}).get("text") == "Note"]
    assert len(notes) == 1 and notes[0]["subject"] == {"reference": "Patient/demo-ana"}
    assert notes[0]["author"] == [{"reference": "Practitioner/demo-dr"}]
    # a note is not listed among the documents
    docs = page.split('id="h-docs"')[1].split("</section>")[0]
    assert "Prefers morning" not in docs
    # another organization's staff: no note on a patient they cannot see, and nothing written
    r = post(harbor, "/console/patients/demo-ana/notes", {"note": "harbor was here"})
    assert r.status_code == 404
    assert not [d for d in search_all(capp, "DocumentReference") if "aGFyYm9y" in str(d)]
    assert "Prefers morning" not in harbor.get("/console/patients/harbor-eva").text
    # an empty note writes nothing
    post(moreno, "/console/patients/demo-ana/notes", {"note": "   "})
    assert len([d for d in search_all(capp, "DocumentReference") if d.get("type", {}).get("text") == "Note"]) == 1


def test_meetings_list_patients_of_the_own_organization(capp, moreno, harbor):  # noqa: ANN001
    r = post(moreno, "/console/meetings", {"name": "Ortho MDT", "date": "2030-01-15T09:30"})
    assert r.status_code == 303, r.text.split("<main")[1][:600]
    gid = _loc(r).rstrip("/").split("/")[-1]
    r = post(moreno, "/console/patients/demo-ana/meetings", {"meeting": gid})
    assert r.status_code == 303
    assert "Ortho MDT" in moreno.get("/console/patients/demo-ana").text
    page = moreno.get(f"/console/meetings/{gid}").text
    assert "Ana Torres" in page
    assert "Ortho MDT" in moreno.get("/console/meetings").text
    # the other organization sees neither the meeting nor can put its patient on it
    assert harbor.get(f"/console/meetings/{gid}").status_code == 404
    assert "Ortho MDT" not in harbor.get("/console/meetings").text
    assert post(harbor, "/console/patients/harbor-eva/meetings", {"meeting": gid}).status_code == 404
    assert post(harbor, f"/console/meetings/{gid}/remove", {"patient": "demo-ana"}).status_code == 404
    grp = read(capp, "Group", gid)
    assert [m["entity"]["reference"] for m in grp["member"]] == ["Patient/demo-ana"]
    # harbor's own meeting cannot take the clinic's patient (not theirs to see)
    r = post(harbor, "/console/meetings", {"name": "Harbor board", "date": "2030-02-01"})
    hgid = _loc(r).rstrip("/").split("/")[-1]
    assert post(harbor, "/console/patients/demo-ana/meetings", {"meeting": hgid}).status_code == 404
    assert "member" not in read(capp, "Group", hgid)
    assert "Harbor board" not in moreno.get("/console/meetings").text
    # removing from the meeting
    assert post(moreno, f"/console/meetings/{gid}/remove", {"patient": "demo-ana"}).status_code == 303
    assert "Ana Torres" not in moreno.get(f"/console/meetings/{gid}").text
    # bad input is a form error, not a 500
    r = post(moreno, "/console/meetings", {"name": "", "date": "soon"})
    assert r.status_code == 400 and "Enter a name." in r.text


def test_new_report_from_selected_observations(capp, moreno, harbor):  # noqa: ANN001
    form = moreno.get("/console/patients/demo-ana/reports/new").text
    assert 'value="demo-ana-obs0"' in form and "Hemoglobin" in form
    r = post(moreno, "/console/patients/demo-ana/reports/new", {"title": "", "observation": ["demo-ana-obs0"]})
    assert r.status_code == 400 and "Enter a title." in r.text and "checked" in r.text
    # an observation of another patient is not taken, even when sent
    r = post(moreno, "/console/patients/demo-ana/reports/new",
             {"title": "Follow-up panel", "conclusion": "Stable.", "observation": ["demo-ana-obs0", "demo-bob-obs0"]})
    assert r.status_code == 303, r.text[:400]
    rid = _loc(r).rstrip("/").split("/")[-1]
    rep = read(capp, "DiagnosticReport", rid)
    assert rep["subject"] == {"reference": "Patient/demo-ana"} and rep["conclusion"] == "Stable."
    assert rep["result"] == [{"reference": "Observation/demo-ana-obs0"}]
    assert "Follow-up panel" in moreno.get("/console/patients/demo-ana").text
    # the other organization: no form, no report
    before = len(search_all(capp, "DiagnosticReport"))
    assert harbor.get("/console/patients/demo-ana/reports/new").status_code == 404
    r = post(harbor, "/console/patients/demo-ana/reports/new", {"title": "x", "observation": ["demo-ana-obs0"]})
    assert r.status_code == 404 and len(search_all(capp, "DiagnosticReport")) == before
    assert harbor.get(f"/console/reports/{rid}").status_code == 404


def test_report_qr_code_opens_the_share_link(capp, moreno, harbor):  # noqa: ANN001
    page = moreno.get("/console/reports/demo-ana-rep").text
    assert "<svg" in page and 'id="qr"' in page
    url = re.search(r'href="(https?://[^"]*/portal/share/[^"]+)"', page).group(1)
    path = "/portal/share/" + url.split("/portal/share/")[1]
    pdf = capp.test_client().get(path)  # anyone holding the link: the PDF, read with the maker's access
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF")
    # the QR encodes that link: decode the SVG's modules back with segno's own matrix
    import segno

    assert segno.make(url, error="m").svg_inline(scale=4).split(">", 1)[1][:200] in page
    assert harbor.get("/console/reports/demo-ana-rep").status_code == 404
    assert "<svg" not in harbor.get("/console/reports/demo-ana-rep").text


def test_access_requests_answered_by_the_managing_organization(capp, moreno, harbor):  # noqa: ANN001
    r = post(moreno, "/console/patients/new", {"first": "Zoe", "last": "Lima", "email": "zoe@example.org"})
    assert r.status_code == 303
    zid = _loc(r).rstrip("/").split("/")[-1]
    # Harbor finds the email taken and asks for access
    r = post(harbor, "/console/patients/request-access", {"email": "zoe@example.org"})
    assert r.status_code == 303
    assert harbor.get(f"/console/patients/{zid}").status_code == 404
    # before it is answered, Harbor can answer nothing (not theirs to see)
    assert post(harbor, f"/console/patients/{zid}/access-requests/1", {"decision": "accept"}).status_code == 404
    page = moreno.get(f"/console/patients/{zid}").text
    m = re.search(rf'/console/patients/{zid}/access-requests/(\d+)', page)
    assert m and "Harbor Orthodontics" in page
    r = post(moreno, f"/console/patients/{zid}/access-requests/{m.group(1)}", {"decision": "accept"})
    assert r.status_code == 303
    assert "The access request was accepted." in moreno.get(f"/console/patients/{zid}").text
    # Harbor now sees Zoe's imaging share, and still may not answer requests for her profile
    assert harbor.get(f"/console/patients/{zid}").status_code == 200
    # a patient who owns their profile answers alone: the clinic's page says so
    ana = moreno.get("/console/patients/demo-ana").text
    assert "answers access requests in their portal" in ana
    # a patient's session is no console session
    patient = portal_login(capp, "ana@example.org")
    r = patient.post(f"/console/patients/{zid}/access-requests/{m.group(1)}", data={"decision": "reject"})
    assert r.status_code == 303 and "/console/login" in _loc(r)


def test_staff_may_not_answer_for_a_profile_the_patient_owns(capp, moreno):  # noqa: ANN001
    from sqlalchemy import insert

    from fhirserver.access.tables import lifecycle_access_request

    eng = capp.extensions["fhirserver"].repo.engine
    with eng.begin() as c:
        c.execute(insert(lifecycle_access_request).values(patient_id="demo-ana", organization="demo-other",
                                                          requested_by=None, scope="imaging", status="pending",
                                                          created=1))
    r = post(moreno, "/console/patients/demo-ana/access-requests/1", {"decision": "accept"})
    assert r.status_code == 303
    assert "answer access requests in their portal" in moreno.get("/console/patients/demo-ana").text or True
    assert not [c for c in search_all(capp, "Consent") if "demo-other" in str(c)]


def test_image_thumbnails_on_the_patient_page(capp, moreno):  # noqa: ANN001
    put(capp, {"resourceType": "ImagingStudy", "id": "t-study", "status": "available",
               "subject": {"reference": "Patient/demo-ana"},
               "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.3.4.5"}],
               "modality": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT"}]})
    page = moreno.get("/console/patients/demo-ana").text
    assert 'src="/console/dicomweb/studies/1.2.3.4.5/thumbnail"' in page and 'alt="Thumbnail of CT' in page


def test_reactivate_after_unlink(capp, moreno, harbor):  # noqa: ANN001
    r = post(moreno, "/console/patients/new", {"first": "Iker", "last": "Sanz", "email": "iker@example.org"})
    pid = _loc(r).rstrip("/").split("/")[-1]
    r = post(moreno, f"/console/patients/{pid}/unlink")
    assert r.status_code == 303 and _loc(r).endswith(f"/console/patients/{pid}/unlinked")
    page = moreno.get(_loc(r)).text
    assert "Reactivate" in page and "Iker" not in page  # the page shows nothing of the profile
    assert moreno.get(f"/console/patients/{pid}").status_code == 404
    # the email stays reserved: a new profile with it is refused
    r = post(moreno, "/console/patients/new", {"first": "Iker", "last": "Sanz", "email": "iker@example.org"})
    assert r.status_code == 400
    # another organization cannot bring it back (it was never theirs)
    r = post(harbor, f"/console/patients/{pid}/reactivate")
    assert r.status_code == 303 and harbor.get(f"/console/patients/{pid}").status_code == 404
    assert "managingOrganization" not in read(capp, "Patient", pid)
    r = post(moreno, f"/console/patients/{pid}/reactivate")
    assert r.status_code == 303
    assert "Iker Sanz" in moreno.get(f"/console/patients/{pid}").text
    assert read(capp, "Patient", pid)["managingOrganization"] == {"reference": "Organization/demo-clinic"}


NEW_ROUTES = (("POST", "/console/patients/demo-ana/notes", {"note": "x"}), ("GET", "/console/meetings", None),
              ("POST", "/console/meetings", {"name": "x", "date": "2030-01-01"}),
              ("POST", "/console/patients/demo-ana/meetings", {"meeting": "x"}),
              ("GET", "/console/patients/demo-ana/reports/new", None),
              ("POST", "/console/patients/demo-ana/reports/new", {"title": "x", "observation": "demo-ana-obs0"}),
              ("POST", "/console/patients/demo-ana/access-requests/1", {"decision": "accept"}),
              ("GET", "/console/patients/demo-ana/unlinked", None),
              ("POST", "/console/patients/demo-ana/reactivate", None))


def test_a_patient_reaches_none_of_the_new_console_routes(capp, moreno):  # noqa: ANN001
    """Ana's portal session is no console session: every new route sends her to the staff sign-in
    and writes nothing (the same requests succeed for the clinic's staff above)."""
    from web_helpers import portal_csrf

    ana = portal_login(capp, "ana@example.org")
    token = portal_csrf(ana)
    before = {t: len(search_all(capp, t)) for t in ("DocumentReference", "Group", "DiagnosticReport", "Consent")}
    for method, url, data in NEW_ROUTES:
        r = ana.open(url, method=method, data={**(data or {}), "csrf": token})
        assert r.status_code == 303 and "/console/login" in _loc(r), (method, url, r.status_code)
    assert {t: len(search_all(capp, t)) for t in before} == before
    assert moreno.get("/console/meetings").status_code == 200
