"""A demo clinic for `fhirserver serve --dev` and the portal tests: an organization, a
practitioner, patients (one adult, a guardian with two children), reports with observations, a
schedule open for online booking with free slots, invoices and a questionnaire."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from fhirserver.access import SystemJob

DEMO_PASSWORD = "demo-pass-1"
STAFF_LOGIN = "staff@clinic.example"  # Dr. Moreno's staff login (invites patients, answers messages)
STAFF_APP = "demo-staff-app"  # a public SMART client for staff scripts and the browser tests
STAFF_APP_REDIRECT = "http://127.0.0.1/cb"
STAFF_SCOPE = "openid fhirUser user/*.cruds"
# The clinic as `serve --dev` presents it when no FHIRSERVER_CLINIC_* variable says otherwise
# (the demo organization's name, a time zone that is not UTC so local times are visible)
DEV_CLINIC = {"clinic_name": "Sunrise Dental & Imaging Clinic", "clinic_timezone": "Europe/Madrid",
              "clinic_address": "Calle Mayor 1, 28013 Madrid", "clinic_tax_id": "B12345678"}
ONLINE = {"coding": [{"system": "urn:fhirserver:portal", "code": "online-booking", "display": "Online booking"}]}


def _iso(d: datetime) -> str:
    return d.isoformat(timespec="seconds")


def resources(slots: int = 6) -> list[dict[str, Any]]:
    now = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    out: list[dict[str, Any]] = [
        {"resourceType": "Organization", "id": "demo-clinic", "name": "Sunrise Dental & Imaging Clinic"},
        {"resourceType": "Organization", "id": "demo-other", "name": "Harbor Orthodontics"},
        {"resourceType": "Practitioner", "id": "demo-dr", "name": [{"prefix": ["Dr."], "given": ["Lucia"],
                                                                   "family": "Moreno"}],
         "telecom": [{"system": "email", "value": "dr.moreno@clinic.example"}]},
        {"resourceType": "Patient", "id": "demo-ana", "name": [{"given": ["Ana"], "family": "Torres"}],
         "birthDate": "1985-04-12", "managingOrganization": {"reference": "Organization/demo-clinic"},
         "telecom": [{"system": "email", "value": "ana@example.org"}],
         "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "en"}]}, "preferred": True}]},
        {"resourceType": "Patient", "id": "demo-leo", "name": [{"given": ["Leo"], "family": "Garcia"}],
         "birthDate": "2016-02-01", "managingOrganization": {"reference": "Organization/demo-clinic"}},
        {"resourceType": "Patient", "id": "demo-mia", "name": [{"given": ["Mia"], "family": "Garcia"}],
         "birthDate": "2019-09-20", "managingOrganization": {"reference": "Organization/demo-clinic"}},
        {"resourceType": "Patient", "id": "demo-bob", "name": [{"given": ["Bob"], "family": "Stone"}],
         "birthDate": "1970-01-01", "managingOrganization": {"reference": "Organization/demo-clinic"},
         "telecom": [{"system": "email", "value": "bob@example.org"}]},
    ]
    for kid in ("demo-leo", "demo-mia"):
        out.append({"resourceType": "RelatedPerson", "id": f"demo-parent-{kid[5:]}", "patient": {"reference": f"Patient/{kid}"},
                    "relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
                                                  "code": "MTH"}]}],
                    "name": [{"given": ["Carmen"], "family": "Garcia"}],
                    "telecom": [{"system": "email", "value": "carmen@example.org"}]})
    for pid, n in (("demo-ana", "Ana"), ("demo-leo", "Leo"), ("demo-mia", "Mia"), ("demo-bob", "Bob")):
        obs = []
        for i, (name, val, unit, lo, hi) in enumerate((("Hemoglobin", 13.6, "g/dL", 12, 16),
                                                         ("Glucose", 97, "mg/dL", 70, 100))):
            oid = f"{pid}-obs{i}"
            obs.append(oid)
            out.append({"resourceType": "Observation", "id": oid, "status": "final", "code": {"text": name},
                        "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": _iso(now - timedelta(days=3)),
                        "valueQuantity": {"value": val, "unit": unit},
                        "referenceRange": [{"low": {"value": lo, "unit": unit}, "high": {"value": hi, "unit": unit}}]})
        out.append({"resourceType": "DiagnosticReport", "id": f"{pid}-rep", "status": "final",
                    "code": {"text": "Blood panel"}, "subject": {"reference": f"Patient/{pid}"},
                    "effectiveDateTime": _iso(now - timedelta(days=3)), "issued": _iso(now - timedelta(days=2)),
                    "performer": [{"reference": "Organization/demo-clinic"}],
                    "result": [{"reference": f"Observation/{o}"} for o in obs],
                    "conclusion": f"Normal blood panel for {n}."})
        out.append({"resourceType": "Invoice", "id": f"{pid}-inv", "status": "issued",
                    "subject": {"reference": f"Patient/{pid}"}, "issuer": {"reference": "Organization/demo-clinic"},
                    "date": _iso(now - timedelta(days=2)),
                    "lineItem": [{"sequence": 1, "chargeItemCodeableConcept": {"text": "Blood panel"},
                                  "priceComponent": [{"type": "base", "amount": {"value": 45.0, "currency": "EUR"}}]}],
                    "totalGross": {"value": 45.0, "currency": "EUR"}})
    out.append({"resourceType": "Schedule", "id": "demo-sched", "active": True, "serviceCategory": [ONLINE],
                "serviceType": [{"text": "Dental check-up"}],
                "actor": [{"reference": "Practitioner/demo-dr", "display": "Dr. Lucia Moreno"}]})
    out.append({"resourceType": "Schedule", "id": "demo-sched-closed", "active": True,
                "serviceType": [{"text": "Surgery (by phone only)"}],
                "actor": [{"reference": "Practitioner/demo-dr"}]})
    for i in range(slots):
        start = now + timedelta(days=2 + i // 3, hours=1 + i % 3)
        out.append({"resourceType": "Slot", "id": f"demo-slot{i}", "schedule": {"reference": "Schedule/demo-sched"},
                    "status": "free", "start": _iso(start), "end": _iso(start + timedelta(minutes=30))})
    start = now + timedelta(days=2)
    out.append({"resourceType": "Slot", "id": "demo-slot-closed", "schedule": {"reference": "Schedule/demo-sched-closed"},
                "status": "free", "start": _iso(start), "end": _iso(start + timedelta(minutes=30))})
    out.append({"resourceType": "Questionnaire", "id": "demo-q", "status": "active", "title": "Health history",
                "url": "http://clinic.example/Questionnaire/health-history",
                "item": [{"linkId": "allergies", "text": "Do you have allergies?", "type": "boolean", "required": True},
                         {"linkId": "which", "text": "Which medicines do you take?", "type": "string"},
                         {"linkId": "smoke", "text": "Cigarettes per day", "type": "integer", "required": True},
                         {"linkId": "pain", "text": "Dental pain", "type": "choice",
                          "answerOption": [{"valueCoding": {"code": "none", "display": "None"}},
                                           {"valueCoding": {"code": "some", "display": "Some"}}]}]})
    return out


def seed(app: Any, users: bool = True) -> dict[str, Any]:
    """PUT the demo resources (idempotent) and create the demo logins (patient, guardian, staff)."""
    from sqlalchemy import insert, select

    from fhirserver.interactions import FhirRequest, dispatch
    from fhirserver.access import lifecycle_account, lifecycle_email
    from smart_auth import add_client, add_user, auth_user, epoch_seconds, get_client, hash_password

    services = app.extensions["fhirserver"]
    with app.test_request_context("/"):
        ctx = services.context(SystemJob("demo seed"))
        for r in resources():
            with services.repo.transaction(write=True) as tx:
                dispatch(ctx, tx, FhirRequest("PUT", r["resourceType"], r["id"], body=r))
    logins = {"ana@example.org": ("patient", "Patient/demo-ana", ["demo-ana"]),
              "carmen@example.org": ("guardian", "RelatedPerson/demo-parent-leo", ["demo-leo", "demo-mia"]),
              "bob@example.org": ("patient", "Patient/demo-bob", ["demo-bob"])}
    eng = services.repo.engine
    if users:
        for email, (role, fu, pats) in logins.items():
            with eng.connect() as c:
                if c.execute(select(auth_user.c.pk).where(auth_user.c.username == email)).first():
                    continue
            u = add_user(eng, username=email, password=DEMO_PASSWORD, role=role, fhir_user=fu, patients=pats)
            with eng.begin() as c:
                rt, rid = fu.split("/")
                c.execute(insert(lifecycle_account).values(
                    user_pk=u["id"], res_type=rt, res_id=rid, email=email, mobile="+34 600 000 000",
                    security_question="First pet's name?", security_answer_hash=hash_password("rex"),
                    must_change_password=False, activated=epoch_seconds(), status="active"))
                if not c.execute(select(lifecycle_email).where(lifecycle_email.c.email == email)).first():
                    c.execute(insert(lifecycle_email).values(email=email, res_type=rt, res_id=rid, status="owned"))
        with eng.connect() as c:
            staff_exists = c.execute(select(auth_user.c.pk).where(auth_user.c.username == STAFF_LOGIN)).first()
        if not staff_exists:
            add_user(eng, username=STAFF_LOGIN, password=DEMO_PASSWORD, role="staff",
                           fhir_user="Practitioner/demo-dr", organizations=["demo-clinic"])
        if get_client(eng, STAFF_APP) is None:
            add_client(eng, name="Demo staff app", client_id=STAFF_APP, redirect_uris=[STAFF_APP_REDIRECT],
                             scope=STAFF_SCOPE, auth_method="none")
    return {"password": DEMO_PASSWORD, "logins": {**logins, STAFF_LOGIN: ("staff", "Practitioner/demo-dr", [])}}
