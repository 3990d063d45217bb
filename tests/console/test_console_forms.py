"""The console's pages and form logic through the Flask test client, as staff of two
organizations: each action succeeds on the staff member's own data, and the same request by the
other organization's staff finds nothing."""
from __future__ import annotations

from console_helpers import csrf_of, login, post, put, read, search_all
from web_helpers import shown_text


def test_sign_in_needs_a_staff_login(capp):  # noqa: ANN001
    c = capp.test_client()
    r = c.get("/console/patients")
    assert r.status_code == 303 and "/console/login" in r.headers["Location"]
    page = c.get("/console/login").text
    assert 'for="f-username"' in page and 'for="f-password"' in page
    r = c.post("/console/login", data={"csrf": csrf_of(page), "username": "ana@example.org", "password": "demo-pass-1"})
    assert r.status_code == 403 and "not a staff login" in r.text
    r = c.post("/console/login", data={"csrf": csrf_of(page), "username": "staff@clinic.example", "password": "nope"})
    assert r.status_code == 401
    r = c.post("/console/login", data={"csrf": "forged", "username": "staff@clinic.example", "password": "demo-pass-1"})
    assert r.status_code == 400
    c2 = login(capp, "staff@clinic.example")
    r = c2.post("/console/patients/demo-ana/tag", data={"tag": "vip", "csrf": "forged"})
    assert r.status_code == 400  # a form without the session's token changes nothing
    assert "vip" not in str(read(capp, "Patient", "demo-ana").get("meta"))


def test_patient_list_shows_only_own_organization(moreno, harbor):  # noqa: ANN001
    mine = moreno.get("/console/patients").text
    assert "Ana Torres" in mine and "Bob Stone" in mine and "Eva Torres" not in mine
    theirs = harbor.get("/console/patients").text
    assert "Eva Torres" in theirs and "Ana Torres" not in theirs and "Bob Stone" not in theirs
    # the same search in both organizations: each sees its own Torres only
    assert "Ana Torres" in moreno.get("/console/patients?q=Torres").text
    assert "Eva Torres" not in moreno.get("/console/patients?q=Torres").text
    assert "Ana Torres" not in harbor.get("/console/patients?q=Torres").text
    assert "Ana Torres" not in harbor.get("/console/patients?q=ana@example.org").text


def test_search_by_name_email_phone_and_filters(capp, moreno):  # noqa: ANN001
    put(capp, {"resourceType": "Patient", "id": "t-lia", "name": [{"given": ["Lia"], "family": "Nunez"}],
               "gender": "female", "managingOrganization": {"reference": "Organization/demo-clinic"},
               "telecom": [{"system": "phone", "value": "+34600111222"}, {"system": "email", "value": "lia@example.org"}]})
    put(capp, {"resourceType": "Appointment", "id": "t-lia-visit", "status": "fulfilled",
               "start": "2024-03-10T09:00:00Z", "end": "2024-03-10T09:30:00Z",
               "participant": [{"actor": {"reference": "Patient/t-lia"}, "status": "accepted"}]})
    assert "Lia Nunez" in moreno.get("/console/patients?q=Nunez").text
    assert "Lia Nunez" in moreno.get("/console/patients?q=lia@example.org").text
    assert "Lia Nunez" in moreno.get("/console/patients?q=%2B34600111222").text
    assert "Lia Nunez" not in moreno.get("/console/patients?q=Stone").text
    r = moreno.get("/console/patients?gender=female")
    assert "Lia Nunez" in r.text and "Bob Stone" not in r.text
    r = moreno.get("/console/patients?from=2024-03-01&to=2024-03-31")
    assert "Lia Nunez" in r.text and "Ana Torres" not in r.text
    assert "Lia Nunez" not in moreno.get("/console/patients?from=2024-04-01").text
    assert 'value="2024-03-01"' in r.text  # the filter stays in the form


def test_keyset_paging(capp, moreno):  # noqa: ANN001
    for i in range(30):
        put(capp, {"resourceType": "Patient", "id": f"t-page{i:02d}", "name": [{"given": [f"P{i:02d}"], "family": "Pager"}],
                   "managingOrganization": {"reference": "Organization/demo-clinic"}})
    first = moreno.get("/console/patients?q=Pager").text
    import re

    nxt = re.search(r'href="([^"]*after=[^"]*)" rel="next"', first)
    assert nxt, first[-2000:]
    second = moreno.get(nxt.group(1).replace("&amp;", "&")).text
    names = lambda html: set(re.findall(r"P\d\d Pager", html))  # noqa: E731
    assert len(names(first)) == 25 and len(names(second)) == 5 and not names(first) & names(second)


def test_new_patient_required_fields_keep_what_was_typed(capp, moreno):  # noqa: ANN001
    r = post(moreno, "/console/patients/new", {"first": "Marta", "last": "", "email": "not-an-email"})
    assert r.status_code == 400
    assert 'value="Marta"' in r.text and 'value="not-an-email"' in r.text
    assert "Enter a last name." in r.text and "Enter a valid email address." in r.text
    r = post(moreno, "/console/patients/new", {"first": "Marta", "last": "Vidal", "email": "marta@example.org",
                                               "birth": "1991-02-03", "gender": "female", "mobile": "+34 600 123 456"})
    assert r.status_code == 303
    pid = r.headers["Location"].rstrip("/").split("/")[-1]
    p = read(capp, "Patient", pid)
    assert p["name"][0] == {"use": "official", "given": ["Marta"], "family": "Vidal"}
    assert p["managingOrganization"]["reference"] == "Organization/demo-clinic"
    assert {"system": "email", "value": "marta@example.org"} in p["telecom"]
    page = moreno.get(f"/console/patients/{pid}").text
    assert "Marta Vidal" in page and "The patient was created." in page
    assert "Marta Vidal" not in login(capp, "ruiz@harbor.example").get(f"/console/patients/{pid}").text


def test_existing_email_is_refused_without_saying_whose(capp, moreno, harbor):  # noqa: ANN001
    # Eva is Harbor's patient: the demo clinic learns only that the email exists
    r = post(moreno, "/console/patients/new", {"first": "X", "last": "Y", "email": "eva@harbor-patients.example"})
    assert r.status_code == 400 and "already exists" in r.text
    assert "Eva" not in shown_text(r.text) and "harbor-eva" not in r.text and "Torres" not in r.text
    assert "Request access" in r.text
    assert len([p for p in search_all(capp, "Patient") if "eva@harbor-patients.example" in str(p)]) == 1
    r = post(moreno, "/console/patients/request-access", {"email": "eva@harbor-patients.example"})
    assert r.status_code == 303


def test_alias_patient_needs_no_personal_data(capp, moreno, harbor):  # noqa: ANN001
    r = post(moreno, "/console/patients/new", {"alias": "on"})
    assert r.status_code == 303, r.text[:800]
    pid = r.headers["Location"].split("/")[-1]
    p = read(capp, "Patient", pid)
    assert p["name"][0]["text"].startswith("ALIAS-") and "telecom" not in p and "birthDate" not in p
    assert p["name"][0]["text"] in moreno.get(f"/console/patients/{pid}").text
    assert harbor.get(f"/console/patients/{pid}").status_code == 404


def test_invitation_needs_the_staff_password_and_sends_mail(capp, moreno, console_smtp):  # noqa: ANN001
    data = {"first": "Iris", "last": "Mena", "email": "iris@example.org", "invite": "on"}
    r = post(moreno, "/console/patients/new", {**data, "password": "wrong"})
    assert r.status_code == 400 and 'value="Iris"' in r.text
    assert not [p for p in search_all(capp, "Patient") if "iris@example.org" in str(p)]  # nothing half-made
    r = post(moreno, "/console/patients/new", {**data, "password": "demo-pass-1"})
    assert r.status_code == 303

    def mailed() -> bool:
        from fhirserver.notify import outbox

        return any("iris@example.org" in str(m) for m in outbox(capp.extensions["fhirserver"].repo.engine, 20))
    assert mailed()


def test_new_patient_with_scan_ticket_goes_to_the_ticket(capp, moreno):  # noqa: ANN001
    r = post(moreno, "/console/patients/new", {"first": "Tom", "last": "Ribas", "email": "tom@example.org",
                                               "ticket": "on"})
    assert r.status_code == 303 and r.headers["Location"].endswith("/tickets/new")


def test_patient_detail_edit_tags_and_isolation(capp, moreno, harbor):  # noqa: ANN001
    page = moreno.get("/console/patients/demo-ana").text
    for label in ("Gender", "Age", "Mobile phone", "Landline", "Date of birth", "ID number",
                  "Medical insurance card number", "Email", "Contact address", "Note"):
        assert f"<dt>{label}</dt>" in page
    assert "Blood panel" in page and "ana@example.org" in page
    assert harbor.get("/console/patients/demo-ana").status_code == 404
    assert harbor.get("/console/patients/demo-ana/edit").status_code == 404
    r = post(moreno, "/console/patients/demo-ana/edit", {"first": "Ana", "last": "Torres", "email": "bad"})
    assert r.status_code == 400 and 'value="bad"' in r.text
    r = post(moreno, "/console/patients/demo-ana/edit", {"first": "Ana", "last": "Torres", "email": "ana@example.org",
                                                         "idnumber": "X1234567", "insurance": "INS-77",
                                                         "landline": "+34 910 000 000", "address": "Calle Mayor 1",
                                                         "note": "Prefers mornings"})
    assert r.status_code == 303
    page = moreno.get("/console/patients/demo-ana").text
    for v in ("X1234567", "INS-77", "Calle Mayor 1", "Prefers mornings"):
        assert v in page
    assert post(harbor, "/console/patients/demo-ana/edit", {"first": "Evil", "last": "X", "email": "x@x.org"}).status_code == 404
    assert post(moreno, "/console/patients/demo-ana/tag", {"tag": "Ortho VIP"}).status_code == 303
    assert "Ortho VIP" in moreno.get("/console/patients/demo-ana").text
    assert post(harbor, "/console/patients/demo-ana/tag", {"tag": "x"}).status_code == 404
    assert post(moreno, "/console/patients/demo-ana/tag", {"remove": "ortho vip"}).status_code == 303
    assert "Ortho VIP" not in moreno.get("/console/patients/demo-ana").text


def test_records_reverse_chronological_with_range(capp, moreno):  # noqa: ANN001
    for i, day in enumerate(("2024-01-05", "2024-06-05", "2023-02-01")):
        put(capp, {"resourceType": "Appointment", "id": f"t-bob-{i}", "status": "fulfilled", "description": f"Visit {day}",
                   "start": f"{day}T10:00:00Z", "end": f"{day}T10:30:00Z",
                   "participant": [{"actor": {"reference": "Patient/demo-bob"}, "status": "accepted"}]})
    page = moreno.get("/console/patients/demo-bob").text
    assert page.index("Visit 2024-06-05") < page.index("Visit 2024-01-05") < page.index("Visit 2023-02-01")
    ranged = moreno.get("/console/patients/demo-bob?from=2024-01-01&to=2024-03-01").text
    records = ranged[ranged.index('id="records"'):ranged.index('id="h-images"')]
    assert "Visit 2024-01-05" in records and "Visit 2024-06-05" not in records and "Visit 2023-02-01" not in records


def test_report_view_and_pdf(capp, moreno, harbor):  # noqa: ANN001
    r = moreno.get("/console/reports/demo-ana-rep")
    assert r.status_code == 200 and "Normal blood panel for Ana." in r.text and "Hemoglobin" in r.text
    pdf = moreno.get("/console/reports/demo-ana-rep.pdf")
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF")
    assert harbor.get("/console/reports/demo-ana-rep").status_code == 404
    assert harbor.get("/console/reports/demo-ana-rep.pdf").status_code == 404


def test_unlink_and_reactivate(capp, moreno, harbor):  # noqa: ANN001
    assert post(harbor, "/console/patients/demo-bob/unlink").status_code == 404
    assert read(capp, "Patient", "demo-bob")["managingOrganization"]
    r = post(moreno, "/console/patients/demo-bob/unlink")
    assert r.status_code == 303
    assert "Bob Stone" not in moreno.get("/console/patients").text
    assert "managingOrganization" not in read(capp, "Patient", "demo-bob")
    r = post(moreno, "/console/patients/demo-bob/reactivate")
    assert r.status_code == 303
    assert "Bob Stone" in moreno.get("/console/patients").text


def test_spanish(capp, moreno):  # noqa: ANN001
    r = post(moreno, "/console/lang", {"lang": "es", "next": "/console/patients"})
    assert r.status_code == 303
    page = moreno.get("/console/patients").text
    assert "Buscar pacientes" in page and "Nuevo paciente" in page and "Estudios sin asignar" in page
    assert 'lang="es"' in page
