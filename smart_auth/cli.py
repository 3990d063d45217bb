"""`fhirserver client ...` and `fhirserver user ...`: work straight on the database, so with the
server stopped or running."""
from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path
from typing import Any, Callable


def _engine(settings: Any) -> Any:
    from fhirserver.storage import make_engine, upgrade

    engine = make_engine(settings.effective_database_url)
    upgrade(engine)
    return engine


def cmd_client(args: argparse.Namespace, settings: Any) -> int:
    from smart_auth import store

    engine = _engine(settings)
    if args.action == "add":
        jwks = None
        if args.jwks:
            jwks = json.loads(Path(args.jwks).read_text()) if not args.jwks.lstrip().startswith("{") \
                else json.loads(args.jwks)
        method = args.auth_method or ("private_key_jwt" if (jwks or args.jwks_uri)
                                      else "client_secret_basic" if args.confidential else "none")
        grants = None
        if args.backend:
            grants = ["client_credentials"]
        try:
            out = store.add_client(engine, name=args.name, redirect_uris=args.redirect_uri or [],
                                   scope=" ".join(args.scope or []), auth_method=method, jwks=jwks,
                                   jwks_uri=args.jwks_uri, grant_types=grants, origins=args.origin or [],
                                   organization=args.organization, client_id=args.client_id)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(json.dumps(out, indent=2))
        return 0
    if args.action == "initial-token":
        print(json.dumps({"initial_access_token": store.add_initial_token(engine, args.organization)}))
        return 0
    if args.action == "list":
        from sqlalchemy import select

        from smart_auth.tables import oauth_client

        with engine.connect() as c:
            rows = c.execute(select(oauth_client.c.client_id, oauth_client.c.name,
                                    oauth_client.c.auth_method, oauth_client.c.scope)).mappings().all()
        print(json.dumps([dict(r) for r in rows], indent=2))
        return 0
    if args.action == "remove":
        from sqlalchemy import delete, update

        from smart_auth.tables import auth_token, oauth_client

        with engine.begin() as c:
            c.execute(update(auth_token).where(auth_token.c.client_id == args.client_id).values(revoked=True))
            n = c.execute(delete(oauth_client).where(oauth_client.c.client_id == args.client_id)).rowcount
            store.forget_client(c)
            store.bump_revocations(c)  # a running server's hosts stop accepting them at once
        if not n:
            print(f"error: no client {args.client_id!r}", file=sys.stderr)
            return 1
        print(json.dumps({"removed": args.client_id}))
        return 0
    if args.action == "launch":
        ctx = {k: v for k, v in (("patient", args.patient), ("encounter", args.encounter)) if v}
        print(json.dumps({"launch": store.mint_launch(engine, ctx)}))
        return 0
    if args.action == "rotate-key":
        print(json.dumps({"kid": store.rotate_key(engine)}))
        return 0
    return 2


def cmd_user(args: argparse.Namespace, settings: Any) -> int:
    from smart_auth import store

    engine = _engine(settings)
    if args.action == "add":
        password = _password(args, settings)
        try:
            out = store.add_user(engine, username=args.username, password=password, role=args.role,
                                 fhir_user=args.fhir_user, patients=args.patient or [],
                                 organizations=args.organization or [], display_name=args.name)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except Exception as exc:  # noqa: BLE001 - e.g. a duplicate username
            if "unique" in str(exc).lower() or "duplicate" in str(exc).lower():
                print(f"error: user {args.username!r} exists", file=sys.stderr)
                return 2
            raise
        print(json.dumps(out, indent=2))
        return 0
    if args.action == "list":
        from sqlalchemy import select

        from smart_auth.tables import auth_user as u

        with engine.connect() as c:
            rows = c.execute(select(u.c.username, u.c.role, u.c.fhir_user, u.c.patients, u.c.organizations,
                                    u.c.display_name, u.c.active, u.c.locked_until)
                             .order_by(u.c.username)).mappings().all()
        out = [{**dict(r), "patients": json.loads(r["patients"] or "[]"),
                "organizations": json.loads(r["organizations"] or "[]"), "active": bool(r["active"])}
               for r in rows]
        print(json.dumps(out, indent=2))
        return 0
    if args.action == "remove":
        return _remove_user(engine, args.username)
    if args.action == "passwd":
        return _set_password(engine, args.username, _password(args, settings))
    if args.action == "unlock":
        from sqlalchemy import update

        from smart_auth.tables import auth_user

        with engine.begin() as c:
            n = c.execute(update(auth_user).where(auth_user.c.username == args.username)
                          .values(failed_logins=0, locked_until=0)).rowcount
        if not n:
            print(f"error: no user {args.username!r}", file=sys.stderr)
            return 1
        print(json.dumps({"unlocked": True}))
        return 0
    return 2


def _password(args: argparse.Namespace, settings: Any) -> str:
    """--password, else FHIRSERVER_USER_PASSWORD, else a line of stdin, else a prompt."""
    password = args.password or settings.user_password
    if not password:
        if not sys.stdin.isatty():
            password = sys.stdin.readline().rstrip("\n")
        else:
            password = getpass.getpass("password: ")
    return password


def _set_password(engine: Any, username: str, password: str) -> int:
    """A new password; the lockout is cleared, its sessions end and its tokens stop working
    (a reset is how an operator answers a leaked password)."""
    from sqlalchemy import delete, select, update

    from smart_auth import store
    from smart_auth.store import hash_password
    from smart_auth.tables import auth_session, auth_token, auth_user

    if len(password) < 8:
        print("error: the password needs at least 8 characters", file=sys.stderr)
        return 2
    with engine.begin() as c:
        pk = c.execute(select(auth_user.c.pk).where(auth_user.c.username == username)).scalar()
        if pk is None:
            print(f"error: no user {username!r}", file=sys.stderr)
            return 1
        c.execute(update(auth_user).where(auth_user.c.pk == pk).values(
            password_hash=hash_password(password), failed_logins=0, locked_until=0))
        c.execute(update(auth_token).where(auth_token.c.user_pk == pk).values(revoked=True))
        c.execute(delete(auth_session).where(auth_session.c.user_pk == pk))
        store.bump_revocations(c)  # a running server's hosts stop accepting them at once
    print(json.dumps({"username": username, "password": "changed"}))
    return 0


def _remove_user(engine: Any, username: str) -> int:
    """Delete the login; its sessions end and its tokens stop working at once. A login other
    records still point to (accounts, invitations) is deactivated instead, so they stay whole."""
    from sqlalchemy import delete, select, update
    from sqlalchemy.exc import IntegrityError

    from smart_auth import store
    from smart_auth.tables import auth_session, auth_token, auth_user

    with engine.begin() as c:
        pk = c.execute(select(auth_user.c.pk).where(auth_user.c.username == username)).scalar()
        if pk is None:
            print(f"error: no user {username!r}", file=sys.stderr)
            return 1
        c.execute(update(auth_token).where(auth_token.c.user_pk == pk).values(revoked=True))
        c.execute(delete(auth_session).where(auth_session.c.user_pk == pk))
        store.bump_revocations(c)  # a running server's hosts stop accepting them at once
    try:
        with engine.begin() as c:
            c.execute(delete(auth_user).where(auth_user.c.pk == pk))
        print(json.dumps({"removed": username}))
    except IntegrityError:
        with engine.begin() as c:
            c.execute(update(auth_user).where(auth_user.c.pk == pk).values(active=False))
        print(json.dumps({"removed": username, "deactivated": True}))
    return 0


def add_commands(sub: Any, add_common: Callable[[argparse.ArgumentParser], None],
                 settings_of: Callable[[argparse.Namespace], Any]) -> None:
    """`client ACTION` and `user ACTION`, each action its own parser (its own --help and flags)."""
    client = sub.add_parser("client", help="OAuth clients (SMART apps, backend services)")
    client_sub = client.add_subparsers(dest="action", required=True)

    def client_action(name: str, text: str) -> argparse.ArgumentParser:
        p = client_sub.add_parser(name, help=text, description=text)
        add_common(p)
        p.set_defaults(func=lambda a: cmd_client(a, settings_of(a)))
        return p

    add = client_action("add", "register a client; prints JSON with its client_id (and secret)")
    add.add_argument("--name", default="SMART app")
    add.add_argument("--client-id", help="choose the client_id (default: random)")
    add.add_argument("--redirect-uri", action="append", help="exact redirect URI (repeatable)")
    add.add_argument("--scope", action="append", help="allowed scopes (repeatable, or space separated)")
    add.add_argument("--confidential", action="store_true", help="issue a client secret")
    add.add_argument("--auth-method", choices=["none", "client_secret_basic", "client_secret_post",
                                                "private_key_jwt"])
    add.add_argument("--jwks", help="JWKS JSON or a file holding it (private_key_jwt)")
    add.add_argument("--jwks-uri", help="JWKS URL (private_key_jwt)")
    add.add_argument("--backend", action="store_true", help="Backend Services client (client_credentials)")
    add.add_argument("--organization", help="Organization id the client is bound to")
    add.add_argument("--origin", action="append", help="allowed CORS origin (default: redirect URIs')")
    client_action("list", "list registered clients (JSON)")
    remove = client_action("remove", "remove a client and revoke its tokens")
    remove.add_argument("client_id")
    token = client_action("initial-token", "an RFC 7591 initial access token for dynamic registration")
    token.add_argument("--organization", help="Organization id the registered clients are bound to")
    launch = client_action("launch", "mint an EHR launch context id")
    launch.add_argument("--patient", help="patient id")
    launch.add_argument("--encounter", help="encounter id")
    client_action("rotate-key", "start signing with a new key (the old one stays published)")

    user = sub.add_parser("user", help="logins: staff, patients, guardians, admins")
    user_sub = user.add_subparsers(dest="action", required=True)

    def user_action(name: str, text: str, named: bool = True) -> argparse.ArgumentParser:
        p = user_sub.add_parser(name, help=text, description=text)
        if named:
            p.add_argument("username")
        add_common(p)
        p.set_defaults(func=lambda a: cmd_user(a, settings_of(a)))
        return p

    add = user_action("add", "create a login; prints JSON")
    add.add_argument("--role", choices=["patient", "guardian", "staff", "admin"], default="patient")
    add.add_argument("--password", help="(default: FHIRSERVER_USER_PASSWORD, stdin, or a prompt)")
    add.add_argument("--fhir-user", help="Patient/ID, Practitioner/ID, RelatedPerson/ID or Person/ID")
    add.add_argument("--patient", action="append", help="patient id the user acts for (repeatable)")
    add.add_argument("--organization", action="append", help="organization id (staff, repeatable)")
    add.add_argument("--name", help="display name")
    user_action("list", "list logins (JSON, without password hashes)", named=False)
    user_action("remove", "remove a login, end its sessions and revoke its tokens")
    user_action("unlock", "clear a login's failed-login lockout")
    passwd = user_action("passwd", "set a login's password; ends its sessions and revokes its tokens")
    passwd.add_argument("--password", help="(default: FHIRSERVER_USER_PASSWORD, stdin, or a prompt)")
