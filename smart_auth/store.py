"""Database side of the authorization server: clients, users, tokens, codes, launches, keys."""
from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
import uuid
from typing import Any, Iterable

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from fhirserver.broadcast import publish
from smart_auth import revocation_signal, shared
from smart_auth.tables import (
    auth_code, auth_initial_token, auth_jti, auth_key, auth_launch, auth_secret, auth_session,
    auth_token, auth_user, oauth_client,
)

_ph = PasswordHasher()
MAX_FAILED_LOGINS = 5
LOCK_SECONDS = 15 * 60
ROLES = ("patient", "guardian", "staff", "admin")
AUTH_METHODS = ("none", "client_secret_basic", "client_secret_post", "private_key_jwt")


def now() -> int:
    return int(time.time())


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def new_token(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


def hash_password(pw: str) -> str:
    return _ph.hash(pw)


def verify_hash(h: str | None, pw: str) -> bool:
    if not h:
        return False
    try:
        return _ph.verify(h, pw)
    except (VerificationError, InvalidHashError):
        return False


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


# -- clients -----------------------------------------------------------------------------
def add_client(engine: Engine, *, name: str, redirect_uris: Iterable[str] = (), scope: str = "",
               auth_method: str = "none", jwks: dict | None = None, jwks_uri: str | None = None,
               grant_types: Iterable[str] | None = None, origins: Iterable[str] = (),
               organization: str | None = None, client_id: str | None = None,
               client_secret: str | None = None) -> dict[str, Any]:
    """Register a client; returns its metadata (with `client_secret` once, for secret clients).

    `client_id` and `client_secret` may be chosen by the caller (dynamic registration)."""
    if auth_method not in AUTH_METHODS:
        raise ValueError(f"token_endpoint_auth_method must be one of {', '.join(AUTH_METHODS)}")
    if auth_method == "private_key_jwt" and not (jwks or jwks_uri):
        raise ValueError("private_key_jwt needs a JWKS or a JWKS URL")
    redirect_uris = list(redirect_uris)
    if grant_types is None:
        grant_types = ["client_credentials"] if (not redirect_uris and auth_method == "private_key_jwt") \
            else ["authorization_code", "refresh_token"]
    grant_types = list(grant_types)
    if "authorization_code" in grant_types and not redirect_uris:
        raise ValueError("an authorization_code client needs at least one redirect URI")
    cid = client_id or uuid.uuid4().hex
    secret = (client_secret or new_token()) if auth_method.startswith("client_secret") else None
    origins = list(origins) or sorted({_origin(u) for u in redirect_uris if _origin(u)})
    with engine.begin() as c:
        c.execute(insert(oauth_client).values(
            client_id=cid, name=name, secret_hash=hash_password(secret) if secret else None,
            auth_method=auth_method, redirect_uris=json.dumps(redirect_uris), scope=scope,
            grant_types=json.dumps(grant_types), jwks=json.dumps(jwks) if jwks else None,
            jwks_uri=jwks_uri, origins=json.dumps(origins), organization=organization, created=now()))
        publish(c, shared.CLIENTS)  # every host's CORS origins include it at once
    out = {"client_id": cid, "client_name": name, "redirect_uris": redirect_uris, "scope": scope,
           "token_endpoint_auth_method": auth_method, "grant_types": grant_types,
           "client_id_issued_at": now()}
    if secret:
        out["client_secret"] = secret
        out["client_secret_expires_at"] = 0
    if jwks_uri:
        out["jwks_uri"] = jwks_uri
    if organization:
        out["organization"] = organization
    return out


def _origin(uri: str) -> str | None:
    from urllib.parse import urlsplit

    u = urlsplit(uri)
    if u.scheme in ("http", "https") and u.netloc:
        return f"{u.scheme}://{u.netloc}"
    return None


def get_client(engine: Engine, client_id: str | None) -> dict[str, Any] | None:
    if not client_id:
        return None
    with engine.connect() as c:
        row = c.execute(select(oauth_client).where(oauth_client.c.client_id == client_id)).mappings().first()
    if row is None:
        return None
    d = dict(row)
    for k in ("redirect_uris", "grant_types", "origins"):
        d[k] = json.loads(d[k] or "[]")
    d["jwks"] = json.loads(d["jwks"]) if d["jwks"] else None
    return d


def _load_origins(engine: Engine) -> frozenset[str]:
    with engine.connect() as c:
        rows = c.execute(select(oauth_client.c.origins)).scalars().all()
    return frozenset(o for r in rows for o in json.loads(r or "[]"))


def all_origins(engine: Engine) -> frozenset[str]:
    """Origins of every client (CORS), cached until a client is added or removed on any host."""
    return shared.cached(engine, shared.CLIENTS, "origins", lambda: _load_origins(engine))


def forget_client(conn: Connection) -> None:
    """After a client's row changed (in that transaction): every host re-reads the clients."""
    publish(conn, shared.CLIENTS)


def origin_allowed(engine: Engine, origin: str) -> bool:
    """Is `origin` one of a client's origins? (A new client bumps the stamp: it counts at once.)"""
    return origin in all_origins(engine)


def add_initial_token(engine: Engine, organization: str | None = None) -> str:
    tok = new_token()
    with engine.begin() as c:
        c.execute(insert(auth_initial_token).values(token_hash=digest(tok), created=now(),
                                                    organization=organization))
    return tok


def check_initial_token(engine: Engine, tok: str) -> dict[str, Any] | None:
    with engine.connect() as c:
        row = c.execute(select(auth_initial_token).where(
            auth_initial_token.c.token_hash == digest(tok))).mappings().first()
    return dict(row) if row else None


# -- users -------------------------------------------------------------------------------
def add_user(engine: Engine, *, username: str, password: str, role: str, fhir_user: str | None = None,
             patients: Iterable[str] = (), organizations: Iterable[str] = (),
             display_name: str | None = None) -> dict[str, Any]:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if len(password) < 8:
        raise ValueError("the password needs at least 8 characters")
    patients = list(patients)
    if role == "patient" and fhir_user and fhir_user.startswith("Patient/") and not patients:
        patients = [fhir_user.split("/", 1)[1]]
    with engine.begin() as c:
        pk = c.execute(insert(auth_user).values(
            username=username, password_hash=hash_password(password), role=role, fhir_user=fhir_user,
            patients=json.dumps(patients), organizations=json.dumps(list(organizations)),
            display_name=display_name, failed_logins=0, locked_until=0, active=True,
            created=now()).returning(auth_user.c.pk)).scalar_one()
    return {"id": pk, "username": username, "role": role, "fhirUser": fhir_user, "patients": patients,
            "organizations": list(organizations)}


def get_user(engine: Engine, pk: int | None) -> dict[str, Any] | None:
    if pk is None:
        return None
    with engine.connect() as c:
        return user_on(c, pk)


def user_named(conn: Any, username: str) -> dict[str, Any] | None:
    """A login by username, read on the caller's connection."""
    return _user(conn.execute(select(auth_user).where(auth_user.c.username == username)).mappings().first())


def set_password(conn: Any, pk: int, password: str, *, unlock: bool = False) -> None:
    """A new password on the caller's connection; `unlock` also clears failed sign-ins (a reset
    proven by the security answer)."""
    values: dict[str, Any] = {"password_hash": hash_password(password)}
    if unlock:
        values.update(failed_logins=0, locked_until=0)
    conn.execute(update(auth_user).where(auth_user.c.pk == pk).values(**values))


def user_on(conn: Any, pk: int) -> dict[str, Any] | None:
    """A login by key, read on the caller's connection (inside its transaction)."""
    return _user(conn.execute(select(auth_user).where(auth_user.c.pk == pk)).mappings().first())


def _user(row: Any) -> dict[str, Any] | None:
    if row is None:
        return None
    d = dict(row)
    d["patients"] = json.loads(d["patients"] or "[]")
    d["organizations"] = json.loads(d["organizations"] or "[]")
    return d


class LoginError(Exception):
    pass


def check_login(engine: Engine, username: str, password: str) -> dict[str, Any]:
    """The user, or LoginError; counts failures and locks the account after too many."""
    with engine.connect() as c:
        row = c.execute(select(auth_user).where(auth_user.c.username == username)).mappings().first()
    if row is None:
        verify_hash(_DUMMY, password)  # same time whether the user exists or not
        raise LoginError("Wrong username or password")
    if row["locked_until"] > now():
        raise LoginError("Too many failed attempts: the account is locked for a while")
    if not row["active"]:
        raise LoginError("This account is not active")
    if not verify_hash(row["password_hash"], password):
        with engine.begin() as c:  # count atomically in the database (several workers)
            c.execute(update(auth_user).where(auth_user.c.pk == row["pk"])
                      .values(failed_logins=auth_user.c.failed_logins + 1))
            c.execute(update(auth_user).where(auth_user.c.pk == row["pk"],
                                              auth_user.c.failed_logins >= MAX_FAILED_LOGINS)
                      .values(failed_logins=0, locked_until=now() + LOCK_SECONDS))
        raise LoginError("Wrong username or password")
    if row["failed_logins"]:
        with engine.begin() as c:
            c.execute(update(auth_user).where(auth_user.c.pk == row["pk"]).values(failed_logins=0))
    return _user(row)  # type: ignore[return-value]


_DUMMY = _ph.hash("not-a-password")


# -- browser sessions -----------------------------------------------------------------------
SESSION_SECONDS = 8 * 3600


def new_session(engine: Engine, user_pk: int) -> tuple[str, str]:
    sid, csrf = new_token(), new_token(16)
    with engine.begin() as c:
        c.execute(insert(auth_session).values(sid_hash=digest(sid), user_pk=user_pk, csrf=csrf,
                                              expires_at=now() + SESSION_SECONDS))
    return sid, csrf


def get_session(engine: Engine, sid: str | None) -> dict[str, Any] | None:
    if not sid:
        return None
    with engine.connect() as c:
        row = c.execute(select(auth_session).where(auth_session.c.sid_hash == digest(sid),
                                                   auth_session.c.expires_at > now())).mappings().first()
    return dict(row) if row else None


def end_session(engine: Engine, sid: str) -> None:
    with engine.begin() as c:
        c.execute(delete(auth_session).where(auth_session.c.sid_hash == digest(sid)))


# -- launch contexts --------------------------------------------------------------------------
def mint_launch(engine: Engine, context: dict[str, Any], ttl: int = 3600) -> str:
    """An EHR launch value standing for a patient/encounter context."""
    launch = new_token(18)
    with engine.begin() as c:
        c.execute(insert(auth_launch).values(launch_hash=digest(launch), context=json.dumps(context),
                                             expires_at=now() + ttl))
    return launch


def get_launch(engine: Engine, launch: str) -> dict[str, Any] | None:
    with engine.connect() as c:
        row = c.execute(select(auth_launch.c.context).where(
            auth_launch.c.launch_hash == digest(launch), auth_launch.c.expires_at > now())).first()
    return json.loads(row[0]) if row else None


# -- codes -------------------------------------------------------------------------------------
CODE_SECONDS = 60


def save_code(engine: Engine, *, client_id: str, user_pk: int | None, redirect_uri: str, scope: str,
              context: dict[str, Any], code_challenge: str, nonce: str | None,
              code: str | None = None) -> str:
    code = code or new_token()
    with engine.begin() as c:
        c.execute(insert(auth_code).values(
            code_hash=digest(code), grant_id=uuid.uuid4().hex, client_id=client_id, user_pk=user_pk,
            redirect_uri=redirect_uri, scope=scope, context=json.dumps(context),
            code_challenge=code_challenge, nonce=nonce, expires_at=now() + CODE_SECONDS, used=False))
    return code


def take_code(engine: Engine, code: str) -> tuple[dict[str, Any] | None, bool]:
    """(the code row, first use). A second use revokes what the first one issued."""
    h = digest(code)
    # read then write: on SQLite take the write lock first (fhir_write -> BEGIN IMMEDIATE), or a
    # concurrent writer in between fails this transaction with SQLITE_BUSY instead of waiting
    with engine.connect().execution_options(fhir_write=True) as c, c.begin():
        row = c.execute(select(auth_code).where(auth_code.c.code_hash == h)).mappings().first()
        if row is None:
            return None, False
        n = c.execute(update(auth_code).where(auth_code.c.code_hash == h, auth_code.c.used.is_(False))
                      .values(used=True)).rowcount
        if n != 1:
            c.execute(update(auth_token).where(auth_token.c.grant_id == row["grant_id"]).values(revoked=True))
            bump_revocations(c)
            return dict(row), False
    d = dict(row)
    d["context"] = json.loads(d["context"])
    return d, True


def nonce_used(engine: Engine, client_id: str, nonce: str) -> bool:
    """Whether an authorization of this client already carried this OpenID nonce (replay)."""
    with engine.connect() as c:
        return c.execute(select(auth_code.c.code_hash).where(
            auth_code.c.client_id == client_id, auth_code.c.nonce == nonce).limit(1)).first() is not None


# -- tokens -------------------------------------------------------------------------------------
def save_token(engine: Engine, *, kind: str, grant_id: str, client_id: str, user_pk: int | None,
               scope: str, context: dict[str, Any], lifetime: int,
               value: str | None = None) -> tuple[str, int]:
    """Store a token (its digest only); `value` is the token the caller generated, or a new one."""
    tok = value or new_token()
    t = now()
    with engine.begin() as c:
        pk = c.execute(insert(auth_token).values(
            token_hash=digest(tok), kind=kind, grant_id=grant_id, client_id=client_id, user_pk=user_pk,
            scope=scope, context=json.dumps(context), issued_at=t, expires_at=t + lifetime,
            revoked=False).returning(auth_token.c.pk)).scalar_one()
    return tok, pk


def find_token(engine: Engine, tok: str, kind: str | None = None) -> dict[str, Any] | None:
    q = select(auth_token).where(auth_token.c.token_hash == digest(tok))
    if kind:
        q = q.where(auth_token.c.kind == kind)
    with engine.connect() as c:
        row = c.execute(q).mappings().first()
    if row is None:
        return None
    d = dict(row)
    d["context"] = json.loads(d["context"])
    return d


def bump_revocations(where: "Engine | Connection") -> int:
    """Every host drops its cached token checks (smart_auth.revocation_signal); with a
    Connection, as the last statement of the transaction that revoked."""
    return revocation_signal.bump(where)


def settle_revocations(tx: Any, stamp: int) -> None:
    """Once `tx` (a storage Tx) committed, answer only after the revocation's notification is out
    (smart_auth.revocation_signal.settle)."""
    engine = tx.conn.engine
    tx.on_commit.append(lambda: revocation_signal.settle(engine, stamp))


def revoke_token(engine: Engine, row: dict[str, Any]) -> None:
    """Revoke one access token, or a refresh token with its whole family."""
    with engine.connect().execution_options(fhir_write=True) as c, c.begin():
        if row["kind"] == "refresh":
            c.execute(update(auth_token).where(auth_token.c.grant_id == row["grant_id"]).values(revoked=True))
        else:
            c.execute(update(auth_token).where(auth_token.c.pk == row["pk"]).values(revoked=True))
        stamp = bump_revocations(c)
    revocation_signal.settle(engine, stamp)


def rotate_refresh(engine: Engine, row: dict[str, Any]) -> bool:
    """Mark a refresh token used; False when it already was (then the family is revoked)."""
    with engine.begin() as c:
        n = c.execute(update(auth_token).where(auth_token.c.pk == row["pk"], auth_token.c.revoked.is_(False))
                      .values(revoked=True)).rowcount
        if n != 1:
            c.execute(update(auth_token).where(auth_token.c.grant_id == row["grant_id"]).values(revoked=True))
            bump_revocations(c)
            return False
    return True


def remember_jti(engine: Engine, client_id: str, jti: str, exp: int) -> bool:
    """False when this assertion id was already used by the client."""
    try:
        with engine.begin() as c:
            c.execute(delete(auth_jti).where(auth_jti.c.expires_at < now() - 600))
            c.execute(insert(auth_jti).values(client_id=client_id, jti=jti[:255], expires_at=exp))
        return True
    except IntegrityError:
        return False


# -- secrets and keys -------------------------------------------------------------------------
def server_secret(engine: Engine, name: str = "forms") -> str:
    """The named secret, created on first use. Concurrent first uses (threads, processes, hosts)
    race on the primary key: the losers' inserts fail and everyone reads the one row that won."""
    with engine.connect() as c:
        val = c.execute(select(auth_secret.c.value).where(auth_secret.c.name == name)).scalar()
    if val:
        return val
    try:
        with engine.begin() as c:
            c.execute(insert(auth_secret).values(name=name, value=new_token(32)))
    except IntegrityError:
        pass
    with engine.connect() as c:
        return c.execute(select(auth_secret.c.value).where(auth_secret.c.name == name)).scalar_one()


def _new_key_row() -> dict[str, Any]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return {"kid": uuid.uuid4().hex[:16], "private_pem": pem, "created": now(), "retired": False}


def rotate_key(engine: Engine, retire_old_after: bool = False) -> str:
    """Add a new signing key (it signs from now on, on every host); older keys stay published
    for verification."""
    row = _new_key_row()
    with engine.begin() as c:
        if retire_old_after:
            c.execute(update(auth_key).values(retired=True))
        c.execute(insert(auth_key).values(**row))
        publish(c, shared.KEYS)
    return row["kid"]


def _load_keys(engine: Engine) -> list[tuple[str, Any]]:
    from joserfc.jwk import RSAKey

    with engine.connect() as c:
        rows = c.execute(select(auth_key).where(auth_key.c.retired.is_(False))
                         .order_by(auth_key.c.created.desc(), auth_key.c.kid)).mappings().all()
    if not rows:
        rotate_key(engine)
        return _load_keys(engine)
    return [(r["kid"], RSAKey.import_key(r["private_pem"], {"kid": r["kid"], "use": "sig", "alg": "RS256"}))
            for r in rows]


def signing_keys(engine: Engine) -> list[tuple[str, Any]]:
    """Published keys (kid, joserfc RSAKey), newest first; the first signs. Cached per app until
    a key is added or retired on any host (a retired key never signs another token)."""
    return shared.cached(engine, shared.KEYS, "signing", lambda: _load_keys(engine))
