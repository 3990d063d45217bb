"""A small world for attacks: org1 and org2, patient A (org1), patient B (org2), child C (org1)
with guardian G, staff of each organization, a backend client bound to each organization.

Tokens are minted the way the authorization server stores them (same context shape as its
consent step), and every request then goes through the real bearer check, the real policy and
SQL; the OAuth flows themselves are tested in tests/auth.
"""
from __future__ import annotations

import functools
import json
import uuid
from typing import Any

from sqlalchemy import insert

from smart_auth import store
from smart_auth.tables import auth_user

JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
PATIENT_SCOPE = "openid fhirUser launch/patient patient/*.cruds"
USER_SCOPE = "openid fhirUser user/*.cruds"
SYSTEM_SCOPE = "system/*.cruds"


@functools.lru_cache(maxsize=1)
def _password_hash() -> str:
    return store.hash_password("password123")


def observation(pid_ref: str, text: str = "x", oid: str | None = None) -> dict[str, Any]:
    body = {"resourceType": "Observation", "status": "final", "code": {"text": text},
            "subject": {"reference": pid_ref}}
    if oid:
        body["id"] = oid
    return body


class World:
    def __init__(self, gate_app: Any, open_app: Any) -> None:
        self.app = gate_app
        self.engine = gate_app.extensions["fhirserver"].repo.engine
        self.c = gate_app.test_client()
        self.open = open_app.test_client()
        self.seed([
            {"resourceType": "Organization", "id": "org1", "name": "Clinic One"},
            {"resourceType": "Organization", "id": "org2", "name": "Clinic Two"},
            {"resourceType": "Patient", "id": "pa", "name": [{"family": "Alpha"}],
             "identifier": [{"system": "urn:mrn", "value": "A-1"}],
             "managingOrganization": {"reference": "Organization/org1"}},
            {"resourceType": "Patient", "id": "pb", "name": [{"family": "Beta"}],
             "identifier": [{"system": "urn:mrn", "value": "B-1"}],
             "managingOrganization": {"reference": "Organization/org2"}},
            {"resourceType": "Patient", "id": "pc", "name": [{"family": "Child"}], "birthDate": "2019-05-01",
             "managingOrganization": {"reference": "Organization/org1"}},
            {"resourceType": "RelatedPerson", "id": "g", "patient": {"reference": "Patient/pc"}},
            observation("Patient/pa", "a-secret", "obs-a"),
            observation("Patient/pb", "b-secret", "obs-b"),
            observation("Patient/pc", "c-secret", "obs-c"),
        ])
        self.tokens = {
            "A": self.token("patient", "Patient/pa", patients=["pa"], patient="pa"),
            "B": self.token("patient", "Patient/pb", patients=["pb"], patient="pb"),
            "G": self.token("guardian", "RelatedPerson/g", patients=["pc"]),
            "S1": self.token("staff", "Practitioner/s1", organizations=["org1"], scope=USER_SCOPE),
            "S2": self.token("staff", "Practitioner/s2", organizations=["org2"], scope=USER_SCOPE),
            "SYS1": self.system_token(["org1"]),
            "SYS2": self.system_token(["org2"]),
        }

    # -- data and tokens -----------------------------------------------------------------------
    def seed(self, resources: list[dict[str, Any]]) -> None:
        for res in resources:
            r = self.open.put(f"/fhir/{res['resourceType']}/{res['id']}", json=res, headers=JSON)
            assert r.status_code in (200, 201), r.get_data(as_text=True)

    def token(self, role: str, fhir_user: str, *, patients: list[str] = (), organizations: list[str] = (),
              patient: str | None = None, scope: str = PATIENT_SCOPE) -> str:
        with self.engine.begin() as c:  # store.add_user's row, with one password hash per run (argon2 is slow)
            user_pk = c.execute(insert(auth_user).values(
                username=f"{role}-{uuid.uuid4().hex[:8]}", password_hash=_password_hash(), role=role,
                fhir_user=fhir_user, patients=json.dumps(list(patients)),
                organizations=json.dumps(list(organizations)), display_name=None, failed_logins=0,
                locked_until=0, active=True, created=store.now()).returning(auth_user.c.pk)).scalar_one()
        client = store.add_client(self.engine, name="app", redirect_uris=["http://app.example/cb"], scope=scope)
        ctx: dict[str, Any] = {"role": role, "fhirUser": fhir_user, "patients": list(patients),
                               "organizations": list(organizations)}
        if patient:
            ctx["patient"] = patient
        tok, _pk = store.save_token(self.engine, kind="access", grant_id=uuid.uuid4().hex,
                                    client_id=client["client_id"], user_pk=user_pk, scope=scope,
                                    context=ctx, lifetime=3600)
        return tok

    def system_token(self, organizations: list[str]) -> str:
        client = store.add_client(self.engine, name="backend", scope=SYSTEM_SCOPE, auth_method="client_secret_basic",
                                  grant_types=["client_credentials"], organization=organizations[0])
        ctx = {"role": "system", "organizations": organizations, "patients": []}
        tok, _pk = store.save_token(self.engine, kind="access", grant_id=uuid.uuid4().hex,
                                    client_id=client["client_id"], user_pk=None, scope=SYSTEM_SCOPE,
                                    context=ctx, lifetime=3600)
        return tok

    # -- requests ----------------------------------------------------------------------------
    def h(self, who: str, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}", **JSON, **extra}

    def get(self, who: str, path: str, **extra: str) -> Any:
        return self.c.get(f"/fhir/{path}", headers=self.h(who, **extra))

    def post(self, who: str, path: str, body: Any, **extra: str) -> Any:
        return self.c.post(f"/fhir/{path}", json=body, headers=self.h(who, **extra))

    def put(self, who: str, path: str, body: Any, **extra: str) -> Any:
        return self.c.put(f"/fhir/{path}", json=body, headers=self.h(who, **extra))

    def delete(self, who: str, path: str, **extra: str) -> Any:
        return self.c.delete(f"/fhir/{path}", headers=self.h(who, **extra))

    def admin_get(self, path: str) -> Any:
        return self.open.get(f"/fhir/{path}", headers=JSON)


def ids(bundle: dict[str, Any], res_type: str | None = None) -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", []) if "resource" in e
            and (res_type is None or e["resource"]["resourceType"] == res_type)}


def text_of(resp: Any) -> str:
    return resp.get_data(as_text=True)
