"""Helpers of the console tests (a uniquely named module: tests/console is not a package)."""
from __future__ import annotations

from typing import Any

PASSWORD = "demo-pass-1"
HARBOR_STAFF = "ruiz@harbor.example"


from web_helpers import csrf_of  # noqa: F401,E402  (one copy for the portal and console tests)


def login(app: Any, username: str, password: str = PASSWORD) -> Any:
    c = app.test_client()
    r = c.get("/console/login")
    r = c.post("/console/login", data={"csrf": csrf_of(r.text), "username": username, "password": password})
    assert r.status_code == 303, r.text[:500]
    c.csrf = csrf_of(c.get("/console/patients").text)
    return c


def post(c: Any, url: str, data: dict | None = None, **kw: Any) -> Any:
    return c.post(url, data={"csrf": c.csrf, **(data or {})}, **kw)


def put(app: Any, body: dict[str, Any]) -> None:
    """Store a resource as the test's setup job (not through the console)."""
    from fhirserver.access import SystemJob
    from fhirserver.interactions import FhirRequest, dispatch

    services = app.extensions["fhirserver"]
    with app.test_request_context("/"):
        ctx = services.context(SystemJob("console test setup"))
        with services.repo.transaction(write=True) as tx:
            dispatch(ctx, tx, FhirRequest("PUT", body["resourceType"], body["id"], body=body))


def read(app: Any, res_type: str, res_id: str) -> dict[str, Any] | None:
    import json

    services = app.extensions["fhirserver"]
    with services.repo.transaction() as tx:
        cur = tx.current(res_type, res_id)
        return json.loads(cur.body) if cur is not None and not cur.deleted and cur.body else None


def search_all(app: Any, res_type: str) -> list[dict[str, Any]]:
    import json

    from sqlalchemy import select

    from fhirserver.storage.tables import resource

    services = app.extensions["fhirserver"]
    with services.repo.engine.connect() as conn:
        rows = conn.execute(select(resource.c.body).where(resource.c.res_type == res_type,
                                                          resource.c.deleted.is_(False))).scalars()
        return [json.loads(r) for r in rows]


def seed_two_orgs(app: Any) -> None:
    """The demo clinic (portal.demo) and Harbor Orthodontics with Dr. Ruiz and one patient."""
    from portal.demo import seed
    from smart_auth import store

    seed(app)
    put(app, {"resourceType": "Practitioner", "id": "harbor-dr", "name": [{"given": ["Pablo"], "family": "Ruiz"}],
              "telecom": [{"system": "email", "value": "dr.ruiz@harbor.example"}]})
    put(app, {"resourceType": "Patient", "id": "harbor-eva", "name": [{"given": ["Eva"], "family": "Torres"}],
              "birthDate": "1990-06-01", "gender": "female",
              "managingOrganization": {"reference": "Organization/demo-other"},
              "telecom": [{"system": "email", "value": "eva@harbor-patients.example"},
                          {"system": "phone", "value": "+34611222333"}]})
    eng = app.extensions["fhirserver"].repo.engine
    store.add_user(eng, username=HARBOR_STAFF, password=PASSWORD, role="staff", fhir_user="Practitioner/harbor-dr",
                   organizations=["demo-other"])
