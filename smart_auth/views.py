"""The `/auth` blueprint: authorize (login, picker, consent), token, introspect, revoke,
register, jwks, launch; plus discovery documents."""
from __future__ import annotations

import base64
import hmac
import json
import logging
import time
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit, parse_qsl

from flask import Blueprint, Response, current_app, jsonify, make_response, redirect, render_template, request
from itsdangerous import BadSignature, URLSafeTimedSerializer

from fhirserver.access import Principal, parse_scopes
from fhirserver.access.scopes import NON_RESOURCE, describe, narrow, parse_scope, split
from smart_auth import store
from smart_auth.audit import audit_token

log = logging.getLogger("fhirserver.auth")
SESSION_COOKIE = "fs_auth_session"
LOGIN_CSRF_COOKIE = "fs_login_csrf"
PENDING_SECONDS = 1800
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGS = ["RS384", "ES384", "RS256", "ES256", "RS512", "ES512"]
MAX_ASSERTION_LIFETIME = 300


class OAuthError(Exception):
    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error, self.description, self.status = error, description, status


def _services() -> Any:
    return current_app.extensions["fhirserver"]


def _engine() -> Any:
    return _services().repo.engine


def _setting(name: str, default: Any) -> Any:
    return getattr(_services().settings, name, default)


def fhir_base() -> str:
    return _services().fhir_base()


def root_url() -> str:
    return _services().root_url()


def _serializer() -> URLSafeTimedSerializer:
    ext = current_app.extensions.setdefault("smart_auth", {})
    if "serializer" not in ext:
        ext["serializer"] = URLSafeTimedSerializer(store.server_secret(_engine()), salt="smart-authorize")
    return ext["serializer"]


def no_store(resp: Response) -> Response:
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Pragma"] = "no-cache"
    return resp


def _oauth_json(body: dict[str, Any], status: int = 200) -> Response:
    return no_store(make_response(jsonify(body), status))


def _cors(resp: Response, origins: frozenset[str] | None = None, any_origin: bool = False) -> Response:
    origin = request.headers.get("Origin")
    if not origin:
        return resp
    if any_origin:
        resp.headers["Access-Control-Allow-Origin"] = "*"
    elif origins is not None and (origin in origins or store.origin_allowed(_engine(), origin)):
        resp.headers["Access-Control-Allow-Origin"] = origin
        resp.headers["Vary"] = "Origin"
    else:
        return resp
    resp.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
    resp.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type, Accept, Prefer, If-Match, If-None-Match"
    resp.headers["Access-Control-Expose-Headers"] = "Location, ETag, Content-Location, Last-Modified, WWW-Authenticate"
    return resp


# -- discovery ------------------------------------------------------------------------------
CAPABILITIES = [
    "launch-ehr", "launch-standalone", "client-public", "client-confidential-symmetric",
    "client-confidential-asymmetric", "context-ehr-patient", "context-ehr-encounter",
    "context-standalone-patient", "context-banner", "context-style", "sso-openid-connect",
    "permission-v1", "permission-v2", "permission-patient", "permission-user", "permission-offline",
    "permission-online", "authorize-post",
]
SUPPORTED_SCOPES = ["openid", "fhirUser", "profile", "launch", "launch/patient", "launch/encounter",
                    "offline_access", "online_access", "patient/*.cruds", "patient/*.rs", "patient/*.read",
                    "patient/*.write", "user/*.cruds", "user/*.rs", "user/*.read", "user/*.write",
                    "system/*.cruds", "system/*.rs", "system/*.read", "system/*.write"]


def smart_configuration() -> dict[str, Any]:
    root = root_url()
    return {
        "issuer": root,
        "jwks_uri": f"{root}/auth/jwks",
        "authorization_endpoint": f"{root}/auth/authorize",
        "token_endpoint": f"{root}/auth/token",
        "introspection_endpoint": f"{root}/auth/introspect",
        "revocation_endpoint": f"{root}/auth/revoke",
        "registration_endpoint": f"{root}/auth/register",
        "management_endpoint": f"{root}/portal/apps",
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post",
                                                  "private_key_jwt", "none"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384", "RS256", "ES256"],
        "scopes_supported": SUPPORTED_SCOPES,
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "capabilities": CAPABILITIES,
    }


def openid_configuration() -> dict[str, Any]:
    root = root_url()
    return {
        "issuer": root,
        "authorization_endpoint": f"{root}/auth/authorize",
        "token_endpoint": f"{root}/auth/token",
        "jwks_uri": f"{root}/auth/jwks",
        "registration_endpoint": f"{root}/auth/register",
        "introspection_endpoint": f"{root}/auth/introspect",
        "revocation_endpoint": f"{root}/auth/revoke",
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "fhirUser", "profile"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "fhirUser", "name", "nonce"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post",
                                                  "private_key_jwt", "none"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
    }


# -- client authentication at the token, introspection and revocation endpoints --------------
def _token_endpoint() -> str:
    return f"{root_url()}/auth/token"


def _client_jwks(client: dict[str, Any]) -> dict[str, Any]:
    if client["jwks"]:
        return client["jwks"]
    if client["jwks_uri"]:
        import requests

        ext = current_app.extensions.setdefault("smart_auth", {})
        cache = ext.setdefault("jwks_uri", {})
        hit = cache.get(client["jwks_uri"])
        if hit and time.monotonic() - hit[0] < 300:
            return hit[1]
        jwks = requests.get(client["jwks_uri"], timeout=5).json()
        cache[client["jwks_uri"]] = (time.monotonic(), jwks)
        return jwks
    raise OAuthError("invalid_client", "The client has no keys", 401)


def _verify_assertion(assertion: str, client_id_hint: str | None) -> dict[str, Any]:
    from joserfc import jwt
    from joserfc.errors import JoseError
    from joserfc.jwk import KeySet

    try:
        unverified = json.loads(base64.urlsafe_b64decode(assertion.split(".")[1] + "==="))
        iss = unverified.get("iss")
    except (ValueError, IndexError, AttributeError):
        raise OAuthError("invalid_client", "client_assertion is not a JWT", 401) from None
    client = store.get_client(_engine(), iss)
    if client is None or (client_id_hint and client_id_hint != iss) or client["auth_method"] != "private_key_jwt":
        raise OAuthError("invalid_client", "Unknown client or the client does not use private_key_jwt", 401)
    try:
        keys = KeySet.import_key_set(_client_jwks(client))
        tok = jwt.decode(assertion, keys, algorithms=ASSERTION_ALGS)
    except (JoseError, ValueError, KeyError) as exc:
        raise OAuthError("invalid_client", f"client_assertion signature: {exc}", 401) from None
    c = tok.claims
    t = store.now()
    aud = c.get("aud")
    auds = aud if isinstance(aud, list) else [aud]
    if c.get("sub") != iss:
        raise OAuthError("invalid_client", "client_assertion: iss and sub must be the client_id", 401)
    if not any(isinstance(a, str) and a.rstrip("/") == _token_endpoint() for a in auds):
        raise OAuthError("invalid_client", f"client_assertion: aud must be {_token_endpoint()}", 401)
    exp = c.get("exp")
    if not isinstance(exp, (int, float)) or exp <= t:
        raise OAuthError("invalid_client", "client_assertion expired or has no exp", 401)
    if exp > t + MAX_ASSERTION_LIFETIME + 5:
        raise OAuthError("invalid_client", "client_assertion: exp may be at most five minutes ahead", 401)
    jti = c.get("jti")
    if not isinstance(jti, str) or not jti:
        raise OAuthError("invalid_client", "client_assertion needs a jti", 401)
    if not store.remember_jti(_engine(), iss, jti, int(exp)):
        raise OAuthError("invalid_client", "client_assertion was already used (jti replay)", 401)
    return client


def authenticate_client(form: Any, *, public_allowed: bool = True) -> dict[str, Any]:
    """The calling client, from Basic auth, form secret, JWT assertion, or client_id (public)."""
    auth = request.authorization
    if form.get("client_assertion_type") or form.get("client_assertion"):
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise OAuthError("invalid_client", "Unsupported client_assertion_type", 401)
        return _verify_assertion(form.get("client_assertion", ""), form.get("client_id"))
    if auth is not None and auth.type == "basic":
        client = store.get_client(_engine(), auth.username)
        if client is None or client["auth_method"] not in ("client_secret_basic", "client_secret_post") \
                or not store.verify_hash(client["secret_hash"], auth.password or ""):
            raise OAuthError("invalid_client", "Client authentication failed", 401)
        return client
    if form.get("client_secret"):
        client = store.get_client(_engine(), form.get("client_id"))
        if client is None or client["auth_method"] not in ("client_secret_post", "client_secret_basic") \
                or not store.verify_hash(client["secret_hash"], form.get("client_secret", "")):
            raise OAuthError("invalid_client", "Client authentication failed", 401)
        return client
    client = store.get_client(_engine(), form.get("client_id"))
    if client is None:
        raise OAuthError("invalid_client", "Unknown client", 401)
    if client["auth_method"] != "none" or not public_allowed:
        raise OAuthError("invalid_client", "This client must authenticate", 401)
    return client


# -- users and context ------------------------------------------------------------------------
def user_patients(user: dict[str, Any]) -> list[str]:
    """Patients a user acts for now: their own record, or a guardian's linked children."""
    from smart_auth.links import live_patients

    with _engine().connect() as c:
        return live_patients(c, user, fhir_base())


def user_context(user: dict[str, Any]) -> dict[str, Any]:
    return {"role": user["role"], "fhirUser": user.get("fhir_user"), "patients": user_patients(user),
            "organizations": list(user["organizations"])}


def _patient_choices(user: dict[str, Any], ctx: dict[str, Any]) -> list[tuple[str, str]]:
    """(id, display name) of the patients the user may pick: what their own policy shows them."""
    from fhirserver.access.scopes import parse_scope as ps
    from smart_auth.fhir import build_policy

    if user["role"] in ("patient", "guardian") and not ctx["patients"]:
        return []
    principal = Principal("picker", user["role"], (ps("user/Patient.rs"),),  # type: ignore[arg-type]
                          organizations=tuple(ctx["organizations"]), patients=tuple(ctx["patients"]),
                          fhir_user=user.get("fhir_user"), user_pk=user["pk"])
    policy = build_policy(_services().repo, _services().settings, principal)
    with _services().repo.transaction() as tx:
        rows = tx.search("Patient", list(policy.row_filter("Patient")), count=200, with_total=False)[0]
    out = []
    for r in rows:
        body = json.loads(r.body or "{}")
        out.append((r.res_id, _name(body) or r.res_id))
    return out


def _context_error(user: dict[str, Any], ctx: dict[str, Any]) -> str | None:
    """Why the launch/picked context is not this user's to see (see smart_auth.launch)."""
    from smart_auth.launch import context_error

    return context_error(_services().repo, _services().settings, user, ctx)


def _name(body: dict[str, Any]) -> str:
    for n in body.get("name") or []:
        if n.get("text"):
            return n["text"]
        parts = list(n.get("given") or []) + ([n["family"]] if n.get("family") else [])
        if parts:
            return " ".join(parts)
    return ""


# -- authorize ----------------------------------------------------------------------------------
def _redirect_error(redirect_uri: str, state: str | None, error: str, desc: str) -> Response:
    return redirect(_add_query(redirect_uri, {"error": error, "error_description": desc,
                                              **({"state": state} if state else {})}))


def _add_query(uri: str, params: dict[str, str]) -> str:
    parts = urlsplit(uri)
    q = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(q), parts.fragment))


def _error_page(message: str, status: int = 400) -> Response:
    return make_response(render_template("auth_error.html", message=message), status)


def _validate_authorize(params: dict[str, str]) -> dict[str, Any] | Response:
    """The validated request, or the response that refuses it."""
    client = store.get_client(_engine(), params.get("client_id"))
    if client is None:
        return _error_page("Unknown application (client_id).")
    redirect_uri = params.get("redirect_uri") or ""
    if redirect_uri not in client["redirect_uris"]:
        return _error_page("The redirect_uri is not registered for this application.")
    state = params.get("state")
    if params.get("response_type") != "code":
        return _redirect_error(redirect_uri, state, "unsupported_response_type", "response_type must be code")
    if "authorization_code" not in client["grant_types"]:
        return _redirect_error(redirect_uri, state, "unauthorized_client", "client may not use this grant")
    if not params.get("code_challenge") or params.get("code_challenge_method") != "S256":
        return _redirect_error(redirect_uri, state, "invalid_request",
                               "PKCE with code_challenge_method=S256 is required")
    aud = (params.get("aud") or "").rstrip("/")
    if aud != fhir_base():
        return _redirect_error(redirect_uri, state, "invalid_request", f"aud must be {fhir_base()}")
    requested = split(params.get("scope"))
    allowed = split(client["scope"])
    scopes = narrow(requested, allowed) if allowed else [s for s in requested
                                                         if s in NON_RESOURCE or parse_scope(s)]
    scopes = [s for s in scopes if not s.startswith("system/")]
    launch_ctx: dict[str, Any] = {}
    if params.get("launch"):
        got = store.get_launch(_engine(), params["launch"])
        if got is None:
            return _redirect_error(redirect_uri, state, "invalid_request", "unknown or expired launch")
        launch_ctx = got
        if "launch" not in scopes:
            scopes.append("launch")
    if not scopes:
        return _redirect_error(redirect_uri, state, "invalid_scope", "no requested scope can be granted")
    return {"client_id": client["client_id"], "redirect_uri": redirect_uri, "state": state,
            "scope": scopes, "code_challenge": params["code_challenge"], "nonce": params.get("nonce"),
            "launch": launch_ctx, "t": int(time.time())}


def _current_user() -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    sess = store.get_session(_engine(), request.cookies.get(SESSION_COOKIE))
    if sess is None:
        return None, None
    user = store.get_user(_engine(), sess["user_pk"])
    if user is None or not user["active"]:
        return None, None
    return user, sess


def _secure() -> bool:
    return request.is_secure or root_url().startswith("https://")


def _login_page(pending: str, error: str | None = None, username: str = "", status: int = 200) -> Response:
    token = store.new_token(16)
    resp = make_response(render_template("auth_login.html", pending=pending, csrf=token, error=error,
                                         username=username), status)
    resp.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="Lax", secure=_secure(),
                    path="/auth")
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _consent_page(req: dict[str, Any], pending: str, user: dict[str, Any], sess: dict[str, Any]) -> Response:
    client = store.get_client(_engine(), req["client_id"])
    ctx = user_context(user)
    choices: list[tuple[str, str]] = []
    if req["launch"]:
        from smart_auth.launch import MINTED_BY

        launched = {**ctx, **{k: req["launch"][k] for k in ("patient", "encounter", MINTED_BY)
                              if k in req["launch"]}}
        why = _context_error(user, launched)
        if why:
            return _redirect_error(req["redirect_uri"], req["state"], "access_denied", why)
    needs_pick = "launch/patient" in req["scope"] and not req["launch"].get("patient")
    if needs_pick:
        choices = _patient_choices(user, ctx)
        if not choices:
            return _redirect_error(req["redirect_uri"], req["state"], "access_denied",
                                   "there is no patient this user can choose")
    items = [(s, describe(s)) for s in req["scope"]]
    resp = make_response(render_template("auth_consent.html", app_name=client["name"] if client else "?",
                                         items=items, pending=pending, csrf=sess["csrf"],
                                         choices=choices, user=user))
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Frame-Options"] = "DENY"
    return resp


def authorize() -> Response:
    params = dict(request.values.items()) if request.method == "POST" else dict(request.args.items())
    result = _validate_authorize(params)
    if isinstance(result, Response):
        return result
    pending = _serializer().dumps(result)
    user, sess = _current_user()
    if user is None:
        return _login_page(pending)
    return _consent_page(result, pending, user, sess)  # type: ignore[arg-type]


def _load_pending(raw: str) -> dict[str, Any] | None:
    try:
        return _serializer().loads(raw, max_age=PENDING_SECONDS)
    except BadSignature:
        return None


def _rate_limited(endpoint: str) -> Response | None:
    from smart_auth import ratelimit

    wait = ratelimit.blocked_for(_engine(), request.remote_addr)
    if not wait:
        return None
    if endpoint == "token":
        resp = _oauth_json({"error": "slow_down", "error_description":
                            "Too many failed attempts from this address; try again later"}, 429)
    else:
        resp = _error_page("Too many failed sign-in attempts from this address; try again later.", 429)
    resp.headers["Retry-After"] = str(wait)
    return resp


def login() -> Response:
    limited = _rate_limited("login")
    if limited is not None:
        return limited
    pending_raw = request.form.get("pending", "")
    req = _load_pending(pending_raw)
    if req is None:
        return _error_page("The sign-in request expired; start again from the application.")
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not cookie or not hmac.compare_digest(cookie, request.form.get("csrf", "")):
        return _error_page("The form expired (CSRF check failed); start again from the application.", 403)
    username = request.form.get("username", "").strip()
    try:
        user = store.check_login(_engine(), username, request.form.get("password", ""))
    except store.LoginError as exc:
        from smart_auth import ratelimit

        ratelimit.record_failure(_engine(), request.remote_addr, "login")
        return _login_page(pending_raw, str(exc), username, 401)
    from smart_auth import activation  # issue 7: a temporary password must be changed first

    if activation.must_change_password(_engine(), user["pk"]):
        return activation.password_page("Your password is temporary: choose a new one, then sign in again.",
                                        username, 403)
    sid, csrf = store.new_session(_engine(), user["pk"])
    sess = {"csrf": csrf}
    resp = _consent_page(req, pending_raw, user, sess)
    resp.set_cookie(SESSION_COOKIE, sid, httponly=True, samesite="Lax", secure=_secure(), path="/auth",
                    max_age=store.SESSION_SECONDS)
    resp.delete_cookie(LOGIN_CSRF_COOKIE, path="/auth")
    return resp


def consent() -> Response:
    req = _load_pending(request.form.get("pending", ""))
    if req is None:
        return _error_page("The request expired; start again from the application.")
    user, sess = _current_user()
    if user is None or sess is None:
        return _login_page(request.form.get("pending", ""), "Please sign in again")
    if not hmac.compare_digest(sess["csrf"], request.form.get("csrf", "")):
        return _error_page("The form expired (CSRF check failed).", 403)
    if request.form.get("decision") != "allow":
        return _redirect_error(req["redirect_uri"], req["state"], "access_denied", "the user refused")
    ticked = set(request.form.getlist("scope"))
    scopes = [s for s in req["scope"] if s in ticked]
    ctx = user_context(user)
    launch = req["launch"] or {}
    patient = launch.get("patient")
    if patient is None and "launch/patient" in scopes:
        allowed = {pid for pid, _n in _patient_choices(user, ctx)}
        patient = request.form.get("patient") or (next(iter(allowed)) if len(allowed) == 1 else None)
        if patient not in allowed:
            return _error_page("Choose one of the listed patients.")
    elif patient is None and user["role"] == "patient" and len(ctx["patients"]) == 1:
        patient = ctx["patients"][0]
    if patient is not None:
        ctx["patient"] = patient
        if user["role"] in ("patient", "guardian") and patient not in ctx["patients"]:
            return _error_page("This launch is for a patient you cannot act for.", 403)
    for k in ("encounter", "fhirContext", "need_patient_banner", "smart_style_url"):
        if k in launch:
            ctx[k] = launch[k]
    from smart_auth.launch import MINTED_BY

    why = _context_error(user, {**ctx, MINTED_BY: launch.get(MINTED_BY)} if MINTED_BY in launch else ctx)
    if why:
        return _redirect_error(req["redirect_uri"], req["state"], "access_denied", why)
    code = store.save_code(_engine(), client_id=req["client_id"], user_pk=user["pk"],
                           redirect_uri=req["redirect_uri"], scope=" ".join(scopes), context=ctx,
                           code_challenge=req["code_challenge"], nonce=req.get("nonce"))
    params = {"code": code}
    if req["state"]:
        params["state"] = req["state"]
    return redirect(_add_query(req["redirect_uri"], params))


def logout() -> Response:
    sid = request.cookies.get(SESSION_COOKIE)
    if sid:
        store.end_session(_engine(), sid)
    resp = make_response(render_template("auth_error.html", message="You are signed out."))
    resp.delete_cookie(SESSION_COOKIE, path="/auth")
    return resp


# -- token --------------------------------------------------------------------------------------
def _lifetimes(scopes: list[str]) -> int | None:
    if "offline_access" in scopes:
        return int(_setting("refresh_token_seconds", 90 * 24 * 3600))
    if "online_access" in scopes:
        return int(_setting("online_refresh_seconds", 8 * 3600))
    return None


def _id_token(client_id: str, ctx: dict[str, Any], user: dict[str, Any] | None, nonce: str | None) -> str:
    from joserfc import jwt

    kid, key = store.signing_keys(_engine())[0]
    t = store.now()
    claims: dict[str, Any] = {"iss": root_url(), "sub": str(user["pk"]) if user else client_id,
                              "aud": client_id, "iat": t, "exp": t + 3600}
    if ctx.get("fhirUser"):
        claims["fhirUser"] = f"{fhir_base()}/{ctx['fhirUser']}"
    if user and user.get("display_name"):
        claims["name"] = user["display_name"]
    if nonce:
        claims["nonce"] = nonce
    return jwt.encode({"alg": "RS256", "kid": kid, "typ": "JWT"}, claims, key)


def _issue(*, client: dict[str, Any], grant_id: str, user_pk: int | None, scopes: list[str],
           ctx: dict[str, Any], nonce: str | None = None, refresh: bool = True,
           refresh_lifetime: int | None = None, grant_type: str = "") -> dict[str, Any]:
    life = int(_setting("access_token_seconds", 3600))
    scope = " ".join(scopes)
    access, _pk = store.save_token(_engine(), kind="access", grant_id=grant_id, client_id=client["client_id"],
                                   user_pk=user_pk, scope=scope, context=ctx, lifetime=life)
    body: dict[str, Any] = {"access_token": access, "token_type": "Bearer", "expires_in": life, "scope": scope}
    for k in ("patient", "encounter", "fhirContext", "smart_style_url"):
        if ctx.get(k):
            body[k] = ctx[k]
    if ctx.get("patient"):
        body["need_patient_banner"] = bool(ctx.get("need_patient_banner", True))
    rl = refresh_lifetime if refresh_lifetime is not None else _lifetimes(scopes)
    if refresh and rl:
        body["refresh_token"], _ = store.save_token(
            _engine(), kind="refresh", grant_id=grant_id, client_id=client["client_id"], user_pk=user_pk,
            scope=scope, context=ctx, lifetime=rl)
    if "openid" in scopes and ("fhirUser" in scopes or "profile" in scopes) and user_pk is not None:
        body["id_token"] = _id_token(client["client_id"], ctx, store.get_user(_engine(), user_pk), nonce)
    try:
        audit_token(_services().repo, client, ctx, scope, grant_type, request.remote_addr)
    except Exception:  # an audit failure must not hide the token error path; log loudly
        log.exception("could not write the AuditEvent for a token")
    return body


def token() -> Response:
    limited = _rate_limited("token")
    if limited is not None:
        return _cors(limited, store.all_origins(_engine()))
    form = request.form
    try:
        gt = form.get("grant_type")
        if gt == "authorization_code":
            body = _grant_code(form)
        elif gt == "refresh_token":
            body = _grant_refresh(form)
        elif gt == "client_credentials":
            body = _grant_client_credentials(form)
        else:
            raise OAuthError("unsupported_grant_type", f"grant_type {gt!r} is not supported")
    except OAuthError as exc:
        if exc.error in ("invalid_client", "invalid_grant"):
            from smart_auth import ratelimit

            ratelimit.record_failure(_engine(), request.remote_addr, "token")
        resp = _oauth_json({"error": exc.error, "error_description": exc.description}, exc.status)
        if exc.status == 401:
            resp.headers["WWW-Authenticate"] = 'Basic realm="fhirserver"'
        return _cors(resp, store.all_origins(_engine()))
    return _cors(_oauth_json(body), store.all_origins(_engine()))


def _grant_code(form: Any) -> dict[str, Any]:
    client = authenticate_client(form)
    row, first = store.take_code(_engine(), form.get("code", ""))
    if row is None or not first:
        raise OAuthError("invalid_grant", "The code is unknown or was already used")
    if row["expires_at"] < store.now():
        raise OAuthError("invalid_grant", "The code expired")
    if row["client_id"] != client["client_id"]:
        raise OAuthError("invalid_grant", "The code was issued to another client")
    if form.get("redirect_uri") != row["redirect_uri"]:
        raise OAuthError("invalid_grant", "redirect_uri does not match the authorization request")
    verifier = form.get("code_verifier") or ""
    if not (43 <= len(verifier) <= 128) or not hmac.compare_digest(store.s256(verifier), row["code_challenge"]):
        raise OAuthError("invalid_grant", "PKCE verification failed")
    scopes = row["scope"].split()
    ctx = _live_grant_context(row["user_pk"], row["context"])
    return _issue(client=client, grant_id=row["grant_id"], user_pk=row["user_pk"], scopes=scopes,
                  ctx=ctx, nonce=row["nonce"], grant_type="authorization_code")


def _live_grant_context(user_pk: int | None, context: dict[str, Any]) -> dict[str, Any]:
    """The grant's context re-derived from the user's live links and re-checked against what the
    user may see now; invalid_grant when it no longer holds (never the old list carried over)."""
    from smart_auth.links import live_context

    if user_pk is None:
        return context
    with _engine().connect() as c:
        ctx = live_context(c, user_pk, context, fhir_base())
    user = store.get_user(_engine(), user_pk)
    if ctx is None or user is None or not user["active"]:
        raise OAuthError("invalid_grant", "The grant no longer holds: the account or its patient link was removed")
    if _context_error(user, ctx):
        raise OAuthError("invalid_grant", "The grant's patient is no longer one this user may see")
    return ctx


def _grant_refresh(form: Any) -> dict[str, Any]:
    client = authenticate_client(form)
    row = store.find_token(_engine(), form.get("refresh_token", ""), kind="refresh")
    if row is None or row["client_id"] != client["client_id"]:
        raise OAuthError("invalid_grant", "Unknown refresh token")
    if row["revoked"] or row["expires_at"] <= store.now():
        if row["revoked"]:
            store.revoke_token(_engine(), row)  # reuse of a rotated token: end the whole family
        raise OAuthError("invalid_grant", "The refresh token is no longer valid")
    granted = row["scope"].split()
    asked = split(form.get("scope")) or granted
    if not set(asked) <= set(granted):
        raise OAuthError("invalid_scope", "A refresh may only narrow the granted scopes")
    try:
        ctx = _live_grant_context(row["user_pk"], row["context"])
    except OAuthError:
        store.revoke_token(_engine(), row)  # the grant ended: its whole token family goes
        raise
    if not store.rotate_refresh(_engine(), row):
        raise OAuthError("invalid_grant", "The refresh token was already used")
    remaining = max(row["expires_at"] - store.now(), 60)
    return _issue(client=client, grant_id=row["grant_id"], user_pk=row["user_pk"], scopes=asked,
                  ctx=ctx, refresh_lifetime=remaining, grant_type="refresh_token")


def _grant_client_credentials(form: Any) -> dict[str, Any]:
    client = authenticate_client(form, public_allowed=False)
    if "client_credentials" not in client["grant_types"]:
        raise OAuthError("unauthorized_client", "This client may not use client_credentials")
    requested = split(form.get("scope"))
    allowed = split(client["scope"])
    scopes = [s for s in narrow(requested, allowed) if s.startswith("system/")]
    if not scopes:
        raise OAuthError("invalid_scope", "No requested system/ scope can be granted")
    orgs = [client["organization"]] if client["organization"] else []
    ctx = {"role": "system", "organizations": orgs, "patients": []}
    return _issue(client=client, grant_id=store.new_token(16), user_pk=None, scopes=scopes, ctx=ctx,
                  refresh=False, grant_type="client_credentials")


# -- introspection and revocation -----------------------------------------------------------------
def introspect() -> Response:
    try:
        bearer = request.headers.get("Authorization", "")
        if bearer.lower().startswith("bearer "):
            from smart_auth.bearer import InvalidToken, authenticate

            try:
                authenticate(_engine(), bearer[7:].strip(), base=fhir_base())
            except InvalidToken:
                raise OAuthError("invalid_client", "The bearer token is not valid", 401) from None
        else:
            authenticate_client(request.form)
    except OAuthError as exc:
        return _oauth_json({"error": exc.error, "error_description": exc.description}, exc.status)
    row = store.find_token(_engine(), request.form.get("token", ""))
    if row is None or row["revoked"] or row["expires_at"] <= store.now():
        return _oauth_json({"active": False})
    try:
        ctx = _live_grant_context(row["user_pk"], row["context"])
    except OAuthError:
        return _oauth_json({"active": False})
    body: dict[str, Any] = {"active": True, "scope": row["scope"], "client_id": row["client_id"],
                            "exp": row["expires_at"], "iat": row["issued_at"], "token_type":
                            "Bearer" if row["kind"] == "access" else "refresh_token",
                            "iss": root_url(), "aud": fhir_base()}
    if row["user_pk"] is not None:
        body["sub"] = str(row["user_pk"])
    for k in ("patient", "encounter"):
        if ctx.get(k):
            body[k] = ctx[k]
    if ctx.get("fhirUser"):
        body["fhirUser"] = f"{fhir_base()}/{ctx['fhirUser']}"
    return _oauth_json(body)


def revoke() -> Response:
    try:
        client = authenticate_client(request.form)
    except OAuthError as exc:
        return _oauth_json({"error": exc.error, "error_description": exc.description}, exc.status)
    row = store.find_token(_engine(), request.form.get("token", ""))
    if row is not None and row["client_id"] == client["client_id"]:
        store.revoke_token(_engine(), row)
    return _cors(_oauth_json({}), store.all_origins(_engine()))


# -- dynamic registration, keys, launch ----------------------------------------------------------
def register() -> Response:
    auth = request.headers.get("Authorization", "")
    initial = store.check_initial_token(_engine(), auth[7:].strip()) if auth.lower().startswith("bearer ") else None
    if initial is None:
        resp = _oauth_json({"error": "invalid_token", "error_description": "an initial access token is required"}, 401)
        resp.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
        return resp
    meta = request.get_json(silent=True)
    if not isinstance(meta, dict):
        return _oauth_json({"error": "invalid_client_metadata", "error_description": "JSON body expected"}, 400)
    try:
        out = store.add_client(
            _engine(), name=str(meta.get("client_name") or "unnamed app"),
            redirect_uris=[str(u) for u in meta.get("redirect_uris") or []],
            scope=str(meta.get("scope") or ""),
            auth_method=str(meta.get("token_endpoint_auth_method") or "client_secret_basic"),
            jwks=meta.get("jwks") if isinstance(meta.get("jwks"), dict) else None,
            jwks_uri=meta.get("jwks_uri"), grant_types=meta.get("grant_types"),
            organization=initial.get("organization"))
    except ValueError as exc:
        err = "invalid_redirect_uri" if "redirect" in str(exc) else "invalid_client_metadata"
        return _oauth_json({"error": err, "error_description": str(exc)}, 400)
    return _oauth_json(out, 201)


def jwks() -> Response:
    keys = [k.as_dict(private=False) for _kid, k in store.signing_keys(_engine())]
    return _cors(make_response(jsonify({"keys": keys})), any_origin=True)


def launch() -> Response:
    """Mint an EHR launch value: POST {"patient": id, "encounter": id} with a staff/admin/system token.

    The patient and encounter must be visible to the minting token; a launch minted with a user's
    token is bound to that user (see smart_auth.launch)."""
    from smart_auth.bearer import InvalidToken, authenticate
    from smart_auth.fhir import policy_for
    from smart_auth.launch import MINTED_BY

    auth = request.headers.get("Authorization", "")
    try:
        principal = authenticate(_engine(), auth[7:].strip(), base=fhir_base()) \
            if auth.lower().startswith("bearer ") else None
    except InvalidToken:
        principal = None
    if principal is None or principal.role not in ("staff", "admin", "system"):
        return _oauth_json({"error": "invalid_token", "error_description": "a staff or system token is needed"}, 401)
    body = request.get_json(silent=True) or {}
    if not isinstance(body, dict):
        return _oauth_json({"error": "invalid_request", "error_description": "a JSON object is expected"}, 400)
    policy = policy_for(principal)
    for key, res_type in (("patient", "Patient"), ("encounter", "Encounter")):
        value = body.get(key)
        if value in (None, ""):
            continue
        with _services().repo.transaction() as tx:
            found = tx.current(res_type, str(value), where=list(policy.row_filter(res_type))) \
                if isinstance(value, str) else None
        if found is None or found.deleted:
            return _oauth_json({"error": "invalid_request", "error_description": f"unknown {key}"}, 400)
    ctx = {k: body[k] for k in ("patient", "encounter", "fhirContext", "need_patient_banner",
                                "smart_style_url") if k in body}
    if principal.user_pk is not None:
        ctx[MINTED_BY] = principal.user_pk
    return _oauth_json({"launch": store.mint_launch(_engine(), ctx)}, 201)


def blueprint() -> Blueprint:
    bp = Blueprint("smart_auth", __name__, template_folder="templates")
    bp.add_url_rule("/authorize", "authorize", authorize, methods=["GET", "POST"])
    bp.add_url_rule("/login", "login", login, methods=["POST"])
    bp.add_url_rule("/consent", "consent", consent, methods=["POST"])
    bp.add_url_rule("/logout", "logout", logout, methods=["GET", "POST"])
    bp.add_url_rule("/token", "token", token, methods=["POST"])
    bp.add_url_rule("/introspect", "introspect", introspect, methods=["POST"])
    bp.add_url_rule("/revoke", "revoke", revoke, methods=["POST"])
    bp.add_url_rule("/register", "register", register, methods=["POST"])
    bp.add_url_rule("/jwks", "jwks", jwks, methods=["GET"])
    bp.add_url_rule("/launch", "launch", launch, methods=["POST"])
    from smart_auth import activation  # issue 7: first access and password change

    activation.register(bp)

    @bp.after_request
    def _headers(resp: Response) -> Response:
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "no-referrer")
        return resp

    @bp.route("/token", methods=["OPTIONS"], endpoint="token_preflight")
    def _token_preflight() -> Response:
        return _cors(make_response("", 204), store.all_origins(_engine()))

    return bp
