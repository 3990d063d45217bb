"""`fhirserver client ...` and `fhirserver user ...`: work straight on the database, so with the
server stopped or running."""
from __future__ import annotations

import argparse
import getpass
import json
import os
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
        password = args.password or os.environ.get("FHIRSERVER_USER_PASSWORD")
        if not password:
            if not sys.stdin.isatty():
                password = sys.stdin.readline().rstrip("\n")
            else:
                password = getpass.getpass("password: ")
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
    if args.action == "unlock":
        from sqlalchemy import update

        from smart_auth.tables import auth_user

        with engine.begin() as c:
            n = c.execute(update(auth_user).where(auth_user.c.username == args.username)
                          .values(failed_logins=0, locked_until=0)).rowcount
        print(json.dumps({"unlocked": bool(n)}))
        return 0 if n else 1
    return 2


def add_commands(sub: Any, add_common: Callable[[argparse.ArgumentParser], None],
                 settings_of: Callable[[argparse.Namespace], Any]) -> None:
    client = sub.add_parser("client", help="OAuth clients (SMART apps, backend services)")
    client.add_argument("action", choices=["add", "list", "initial-token", "launch", "rotate-key"])
    client.add_argument("--name", default="SMART app")
    client.add_argument("--client-id", help="choose the client_id (default: random)")
    client.add_argument("--redirect-uri", action="append", help="exact redirect URI (repeatable)")
    client.add_argument("--scope", action="append", help="allowed scopes (repeatable, or space separated)")
    client.add_argument("--confidential", action="store_true", help="issue a client secret")
    client.add_argument("--auth-method", choices=["none", "client_secret_basic", "client_secret_post",
                                                   "private_key_jwt"])
    client.add_argument("--jwks", help="JWKS JSON or a file holding it (private_key_jwt)")
    client.add_argument("--jwks-uri", help="JWKS URL (private_key_jwt)")
    client.add_argument("--backend", action="store_true", help="Backend Services client (client_credentials)")
    client.add_argument("--organization", help="Organization id the client is bound to")
    client.add_argument("--origin", action="append", help="allowed CORS origin (default: redirect URIs')")
    client.add_argument("--patient", help="launch: patient id")
    client.add_argument("--encounter", help="launch: encounter id")
    add_common(client)
    client.set_defaults(func=lambda a: cmd_client(a, settings_of(a)))

    user = sub.add_parser("user", help="logins: staff, patients, guardians, admins")
    user.add_argument("action", choices=["add", "unlock"])
    user.add_argument("username")
    user.add_argument("--role", choices=["patient", "guardian", "staff", "admin"], default="patient")
    user.add_argument("--password", help="(default: FHIRSERVER_USER_PASSWORD, stdin, or a prompt)")
    user.add_argument("--fhir-user", help="Patient/ID, Practitioner/ID, RelatedPerson/ID or Person/ID")
    user.add_argument("--patient", action="append", help="patient id the user acts for (repeatable)")
    user.add_argument("--organization", action="append", help="organization id (staff, repeatable)")
    user.add_argument("--name", help="display name")
    add_common(user)
    user.set_defaults(func=lambda a: cmd_user(a, settings_of(a)))
