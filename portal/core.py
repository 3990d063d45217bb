"""Portal sessions, the user's SMART policy, and FHIR calls through the same interactions as the API.

The portal acts as the signed-in patient (or guardian) everywhere: every read and write goes
through `Fhir(g.policy)`. Two things a patient's action needs beyond their own rights run as named
jobs with narrow scopes (`booking_fhir`), and a share link renders with the policy of the user who
made it (`sharer_policy`), rebuilt when the link is opened. There is no open-policy client here.
"""
from __future__ import annotations

import json
from typing import Any

from flask import current_app, g, request
from sqlalchemy.exc import IntegrityError

from fhirserver.access import Principal, job_policy, parse_scopes
from fhirserver.interactions import FhirRequest, dispatch, request_writes, run_in_transaction
from fhirserver.errors import FhirError
from portal import webparts
from portal.webparts import engine, services

PORTAL_CLIENT = "fhirserver-portal"
SESSION_COOKIE = "fs_portal_session"
PATIENT_COOKIE = "fs_portal_patient"
LANG_COOKIE = "fs_portal_lang"
ANON_CSRF_COOKIE = "fs_portal_csrf"
FLASH_COOKIE = "fs_portal_flash"
SITE = webparts.Site(path="/portal", session_cookie=SESSION_COOKIE, anon_csrf_cookie=ANON_CSRF_COOKIE,
                     flash_cookie=FLASH_COOKIE, flash_purpose="portal-flash")
PATIENT_SCOPES = "openid fhirUser patient/*.cruds"
STAFF_SCOPES = "openid fhirUser user/*.cruds"


def ensure_client() -> None:
    """The portal is a first-party SMART client of this server: registered once."""
    from smart_auth import add_client, get_client

    ext = current_app.extensions.setdefault("portal", {})
    if ext.get("client"):
        return
    if get_client(engine(), PORTAL_CLIENT) is None:
        try:
            add_client(engine(), name="Patient portal (first party)", client_id=PORTAL_CLIENT,
                             redirect_uris=[services().root_url() + "/portal/"],
                             scope=PATIENT_SCOPES, auth_method="none")
        except IntegrityError:  # another worker registered it first
            pass
    ext["client"] = True


def load_session() -> None:
    """Sets g.user, g.session (csrf), g.patient (the patient acted for), g.principal, g.policy."""
    from smart_auth import get_session, get_user

    g.user = g.session = g.principal = g.policy = g.patient = None
    sess = get_session(engine(), request.cookies.get(SESSION_COOKIE))
    if sess is None:
        return
    user = get_user(engine(), sess["user_pk"])
    if user is None or not user["active"]:
        return
    from smart_auth import live_patients

    with engine().connect() as conn:  # the links in force now (a removed guardian link ends access)
        user = {**user, "patients": live_patients(conn, user, services().fhir_base())}
    g.user, g.session = user, sess
    patients = list(user["patients"])
    wanted = request.cookies.get(PATIENT_COOKIE)
    g.principal = principal_for(user, wanted if wanted in patients else (patients[0] if patients else None))
    from smart_auth import policy_for

    g.policy = policy_for(g.principal)
    pol_p = getattr(g.policy, "p", g.principal)
    live = list(pol_p.patients) if pol_p.role == "guardian" else patients
    g.patients = live
    g.patient = pol_p.patient if pol_p.patient in live else (live[0] if live else None)


def principal_for(user: dict[str, Any], patient: str | None) -> Principal:
    scope = PATIENT_SCOPES if user["role"] in ("patient", "guardian") else STAFF_SCOPES
    return Principal(client_id=PORTAL_CLIENT, role=user["role"], scopes=tuple(parse_scopes(scope.split())),
                     scope_text=scope, patient=patient, patients=tuple(user["patients"]),
                     organizations=tuple(user["organizations"]), fhir_user=user["fhir_user"],
                     user_pk=user["pk"])


def csrf_ok() -> bool:
    return webparts.csrf_ok(SITE)


# -- FHIR through the interactions, with the user's policy -------------------------------------
def _as_dict(body: Any) -> Any:
    if isinstance(body, bytes):
        body = body.decode()
    return json.loads(body) if isinstance(body, str) else body


class Fhir:
    """FHIR interactions with one policy (required: the portal has no open client). The audit
    trail names `client_id` as the app that acted (the console's subclass names itself)."""

    client_id = PORTAL_CLIENT

    def __init__(self, policy: Any, audit: bool = True) -> None:
        if policy is None:
            raise ValueError("the portal calls FHIR with a policy")
        self.audited = audit
        self.policy = policy
        self.ctx = services().context(policy)
        self.repo = services().repo

    def _audit(self, action: str, interaction: str, refs: list[str], query: str | None = None) -> None:
        p = getattr(g, "principal", None)
        if p is None or not self.audited:
            return
        try:
            services().audit.record(who={"reference": p.fhir_user, "client_id": self.client_id}, action=action,
                                    interaction=interaction, references=refs, query=query,
                                    remote=request.remote_addr)
        except Exception:  # noqa: BLE001  auditing never breaks a page
            pass

    def call(self, req: FhirRequest, tx: Any = None) -> Any:
        if tx is not None:
            return dispatch(self.ctx, tx, req)
        return run_in_transaction(self.repo, lambda t: dispatch(self.ctx, t, req), write=request_writes(req, self.ctx.operations))

    def read(self, res_type: str, res_id: str, tx: Any = None) -> dict[str, Any] | None:
        try:
            resp = self.call(FhirRequest("GET", res_type, res_id), tx)
        except FhirError:
            return None
        self._audit("R", "read", [f"{res_type}/{res_id}"])
        return _as_dict(resp.body)

    def search(self, res_type: str, params: list[tuple[str, str]], tx: Any = None) -> list[dict[str, Any]]:
        try:
            resp = self.call(FhirRequest("GET", res_type, params=list(params)), tx)
        except FhirError:
            return []
        bundle = _as_dict(resp.body)
        out = []
        for e in bundle.get("entry") or []:
            if (e.get("search") or {}).get("mode", "match") != "match":
                continue
            r = _as_dict(e.get("resource"))
            if isinstance(r, dict):
                out.append(r)
        self._audit("E", "search-type", [f"{r['resourceType']}/{r['id']}" for r in out],
                    f"{res_type}?" + "&".join(f"{k}={v}" for k, v in params))
        return out

    def create(self, res_type: str, body: dict[str, Any], tx: Any = None) -> dict[str, Any]:
        resp = self.call(FhirRequest("POST", res_type, body=body), tx)
        out = _as_dict(resp.body)
        self._audit("C", "create", [f"{res_type}/{out.get('id')}"])
        return out

    def update(self, res_type: str, res_id: str, body: dict[str, Any], tx: Any = None) -> dict[str, Any]:
        resp = self.call(FhirRequest("PUT", res_type, res_id, body=body), tx)
        self._audit("U", "update", [f"{res_type}/{res_id}"])
        return _as_dict(resp.body)

    def operation(self, res_type: str, res_id: str | None, op: str, params: list[tuple[str, str]] = (),
                  method: str = "GET", body: Any = None) -> Any:
        resp = self.call(FhirRequest(method, res_type, res_id, operation=op, params=list(params), body=body))
        return _as_dict(resp.body) if not isinstance(resp.body, bytes) else resp.body


def user_fhir() -> Fhir:
    return Fhir(g.policy)


def guardian_fhir() -> Fhir:
    """A guardian's policy over every child they act for now (the children's names in the header);
    the page itself uses the one child chosen."""
    import dataclasses

    from smart_auth import policy_for

    return Fhir(policy_for(dataclasses.replace(g.principal, patient=None)), audit=False)


# The booking job: reads the Schedules open for online booking (Schedule is Patient-compartment
# data, so a patient's own policy sees none) and marks Slots busy or free. Nothing else.
BOOKING_SCOPES = "system/Schedule.rs?service-category=urn:fhirserver:portal|online-booking system/Slot.rus"


def booking_fhir() -> Fhir:
    return Fhir(job_policy("portal-booking", BOOKING_SCOPES, postgres=services().repo.postgres), audit=False)


def sharer_policy(user_pk: Any, patient: str | None) -> Any:
    """The policy of the user who made a share link, as of now; None when their account is gone
    or closed, or the patient is no longer one they act for (the link stops working)."""
    from smart_auth import get_user, policy_for

    if not isinstance(user_pk, int):
        return None
    user = get_user(engine(), user_pk)
    if user is None or not user["active"]:
        return None
    if user["role"] in ("patient", "guardian") and patient not in user["patients"]:
        return None
    policy = policy_for(principal_for(user, patient))
    live = getattr(policy, "p", None)
    if user["role"] in ("patient", "guardian") and (live is None or patient not in live.patients):
        return None
    return policy
