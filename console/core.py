"""Console sessions, the staff member's own SMART policy, FHIR calls, rendering and flash banners.

A staff member signs in with their server login (the same user store, lockout and sessions as
the auth server and the portal); every page then acts with `policy_for(principal)` built from
that login alone: their organizations, their Consent shares. There is no open or system client
in the console: what a page shows is what the REST API would answer that staff member.
"""
from __future__ import annotations

import json
from typing import Any, Callable

from flask import Response, abort, current_app, g, request

from fhirserver.access import Principal, parse_scopes
from fhirserver.interactions import FhirRequest
from fhirserver.errors import FhirError
from fhirserver.operations import concept_text, human_name
from portal import (
    Fhir, WebSite, csrf_ok as site_csrf_ok, redirect_back, render_page, settle_lang, web_engine as engine,
    web_services as services,
)
from console.i18n import LANGS, translate

CONSOLE_CLIENT = "fhirserver-console"
SESSION_COOKIE = "fs_console_session"
LANG_COOKIE = "fs_console_lang"
ANON_CSRF_COOKIE = "fs_console_csrf"
FLASH_COOKIE = "fs_console_flash"
STAFF_SCOPES = "openid fhirUser user/*.cruds"
STAFF_ROLES = ("staff", "admin")
PATH = "/console"
SITE = WebSite(path=PATH, session_cookie=SESSION_COOKIE, anon_csrf_cookie=ANON_CSRF_COOKIE,
                     flash_cookie=FLASH_COOKIE, flash_purpose="console-flash")


# -- session -------------------------------------------------------------------------------------
def principal_for(user: dict[str, Any]) -> Principal:
    """The staff member as a principal: their role, organizations and login, nothing more."""
    return Principal(client_id=CONSOLE_CLIENT, role=user["role"], scopes=tuple(parse_scopes(STAFF_SCOPES.split())),
                     scope_text=STAFF_SCOPES, organizations=tuple(user["organizations"]),
                     fhir_user=user["fhir_user"], user_pk=user["pk"])


def load_session() -> None:
    """Sets g.user, g.session (its csrf), g.principal and g.policy of the signed-in staff member."""
    from smart_auth import get_session, get_user, policy_for

    g.user = g.session = g.principal = g.policy = None
    sess = get_session(engine(), request.cookies.get(SESSION_COOKIE))
    if sess is None:
        return
    user = get_user(engine(), sess["user_pk"])
    if user is None or not user["active"] or user["role"] not in STAFF_ROLES:
        return
    g.user, g.session = user, sess
    g.principal = principal_for(user)
    g.policy = policy_for(g.principal)


def csrf_ok() -> bool:
    return site_csrf_ok(SITE)


# -- FHIR with the staff member's policy -------------------------------------------------------------
class StaffFhir(Fhir):
    """The portal's FHIR client with the staff member's policy, audited as the console."""

    client_id = CONSOLE_CLIENT

    def page(self, res_type: str, params: list[tuple[str, str]]) -> tuple[list[dict[str, Any]], str | None]:
        """One page of a search and the cursor of the next page (the engine's keyset paging)."""
        from urllib.parse import parse_qs, urlsplit

        try:
            resp = self.call(FhirRequest("GET", res_type, params=list(params)))
        except FhirError as exc:
            current_app.logger.warning("console search %s %s refused: %s", res_type, params, exc)
            return [], None
        body = resp.body.decode() if isinstance(resp.body, bytes) else resp.body
        bundle = json.loads(body) if isinstance(body, str) else body
        rows = []
        for e in bundle.get("entry") or []:
            r = e.get("resource")
            r = json.loads(r) if isinstance(r, (str, bytes)) else r  # stored bytes, passed through
            if (e.get("search") or {}).get("mode", "match") == "match" and isinstance(r, dict):
                rows.append(r)
        after = None
        for link in bundle.get("link") or []:
            if link.get("relation") == "next":
                after = (parse_qs(urlsplit(link.get("url", "")).query).get("_page_after") or [None])[0]
        self._audit("E", "search-type", [f"{r['resourceType']}/{r['id']}" for r in rows],
                    f"{res_type}?" + "&".join(f"{k}={v}" for k, v in params))
        return rows, after

    def op(self, res_type: str, res_id: str | None, op: str, params: list[tuple[str, Any]] = (),
           tx: Any = None) -> Any:
        """POST a `$op` with Parameters (name, value) pairs; in `tx` when given."""
        body = {"resourceType": "Parameters", "parameter": [_param(k, v) for k, v in params]}
        resp = self.call(FhirRequest("POST", res_type, res_id, operation=op, body=body), tx)
        out = resp.body.decode() if isinstance(resp.body, bytes) else resp.body
        return json.loads(out) if isinstance(out, str) else out


def _param(name: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"name": name, "valueBoolean": value}
    if isinstance(value, dict) and "reference" in value:
        return {"name": name, "valueReference": value}
    if isinstance(value, dict):
        return {"name": name, "resource": value}
    return {"name": name, "valueString": str(value)}


def fhir() -> StaffFhir:
    if g.get("policy") is None:
        raise FhirError(401, "Not signed in", "login")
    return StaffFhir(g.policy)


def patient_or_404(pid: str) -> dict[str, Any]:
    """The patient as this staff member may see it, or 404 (another organization's answers the same)."""
    p = fhir().read("Patient", pid)
    if p is None:
        abort(404)
    return p


def out_params(params: Any) -> dict[str, list[Any]]:
    """A Parameters resource as name -> values."""
    out: dict[str, list[Any]] = {}
    for p in (params or {}).get("parameter") or []:
        val = next((v for k, v in p.items() if k.startswith("value") or k == "resource"), None)
        out.setdefault(p.get("name"), []).append(val)
    return out


# -- language, rendering, flash --------------------------------------------------------------------
def lang() -> str:
    """The language asked for in the link, else the cookie's, else the browser's."""
    if g.get("lang"):
        return g.lang
    return settle_lang(request.args.get("lang") or request.cookies.get(LANG_COOKIE))


def _(text: str, **kw: Any) -> str:
    return translate(lang(), text, **kw)


def page(template: str, status: int = 200, **kw: Any) -> Response:
    return render_page(SITE, f"console/{template}", status, _=_, lang=lang(), user=g.get("user"),
                           name=display_name, concept=concept_text, **kw)


def back(endpoint: str, msg: str | None = None, **kw: Any) -> Response:
    """Redirect (303) to a page that shows `msg` once, carried in a signed cookie."""
    return redirect_back(SITE, endpoint, msg, **kw)


def write_then_back(write: Callable[[], Any], endpoint: str, done: str | None, **kw: Any) -> Response:
    """Run one FHIR write, then back to `endpoint` saying `done`, or the refusal's text instead."""
    try:
        write()
    except FhirError as exc:
        done = error_text(exc)
    return back(endpoint, done, **kw)


def display_name(res: dict[str, Any] | None) -> str:
    """A person's name for lists; an alias profile shows its alias."""
    if not res:
        return ""
    return human_name(res) or next((n.get("text") for n in res.get("name") or [] if n.get("text")), "") \
        or res.get("id", "")


def ref_id(value: Any, res_type: str) -> str | None:
    """The id of a local reference to `res_type` (the one reference parser), else None."""
    from fhirserver.model import reference_id

    return reference_id(value, res_type, services().fhir_base())


def error_text(exc: FhirError) -> str:
    """The first issue's text of a refusal, for a banner."""
    return exc.issues[0].diagnostics if exc.issues else str(exc)


def with_tags(res: dict[str, Any], tags: list[dict[str, Any]]) -> dict[str, Any]:
    """`res` with these meta.tag codings (FHIR allows no empty array: none drops the element)."""
    meta = {k: v for k, v in (res.get("meta") or {}).items() if k not in ("tag", "versionId", "lastUpdated")}
    if tags:
        meta["tag"] = tags
    out = {k: v for k, v in res.items() if k != "meta"}
    if meta:
        out["meta"] = meta
    return out
