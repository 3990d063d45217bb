"""Tables of the authorization server (on the core MetaData; created by migration 0004).

Secrets are never stored: client secrets and passwords as argon2 hashes, tokens, codes and
launch ids as SHA-256 digests. Times are integer seconds since the epoch (UTC).
"""
from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, String, Table, Text

from fhirserver.storage import PK, metadata

oauth_client = Table(
    "oauth_client", metadata,
    Column("client_id", String(100), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("secret_hash", Text, nullable=True),
    # none | client_secret_basic | client_secret_post | private_key_jwt
    Column("auth_method", String(40), nullable=False),
    Column("redirect_uris", Text, nullable=False, default="[]"),  # JSON list
    Column("scope", Text, nullable=False, default=""),  # allowed scopes (space separated)
    Column("grant_types", Text, nullable=False, default="[]"),  # JSON list
    Column("jwks", Text, nullable=True),  # JSON key set
    Column("jwks_uri", Text, nullable=True),
    Column("origins", Text, nullable=False, default="[]"),  # JSON list of CORS origins
    Column("organization", String(64), nullable=True),  # backend services: bound organization id
    Column("created", BigInteger, nullable=False),
)

auth_user = Table(
    "auth_user", metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("username", String(200), nullable=False, unique=True),
    Column("password_hash", Text, nullable=False),
    Column("role", String(20), nullable=False),  # patient | guardian | staff | admin
    Column("fhir_user", String(140), nullable=True),  # e.g. Patient/123, Practitioner/9
    Column("patients", Text, nullable=False, default="[]"),  # JSON ids the user acts for
    Column("organizations", Text, nullable=False, default="[]"),  # JSON org ids (staff)
    Column("display_name", String(200), nullable=True),
    Column("failed_logins", Integer, nullable=False, default=0),
    Column("locked_until", BigInteger, nullable=False, default=0),
    Column("active", Boolean, nullable=False, default=True),
    Column("created", BigInteger, nullable=False),
)

auth_token = Table(
    "auth_token", metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("kind", String(10), nullable=False),  # access | refresh
    Column("grant_id", String(64), nullable=False),  # one authorization: its refresh/access family
    Column("client_id", String(100), nullable=False),
    Column("user_pk", BigInteger, nullable=True),
    Column("scope", Text, nullable=False),
    Column("context", Text, nullable=False),  # JSON: patient, encounter, fhirUser, patients, orgs...
    Column("issued_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("revoked", Boolean, nullable=False, default=False),
    Index("ix_auth_token_grant", "grant_id"),
)

auth_code = Table(
    "auth_code", metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("grant_id", String(64), nullable=False),
    Column("client_id", String(100), nullable=False),
    Column("user_pk", BigInteger, nullable=True),
    Column("redirect_uri", Text, nullable=False),
    Column("scope", Text, nullable=False),
    Column("context", Text, nullable=False),
    Column("code_challenge", String(128), nullable=False),
    Column("nonce", Text, nullable=True),
    Column("expires_at", BigInteger, nullable=False),
    Column("used", Boolean, nullable=False, default=False),
)

auth_launch = Table(
    "auth_launch", metadata,
    Column("launch_hash", String(64), primary_key=True),
    Column("context", Text, nullable=False),  # JSON: patient, encounter, fhirContext
    Column("expires_at", BigInteger, nullable=False),
)

auth_jti = Table(  # client assertion ids seen (replay protection), kept until they expire
    "auth_jti", metadata,
    Column("client_id", String(100), primary_key=True),
    Column("jti", String(255), primary_key=True),
    Column("expires_at", BigInteger, nullable=False),
)

auth_key = Table(  # token signing keys (id_token); the newest active one signs, all published
    "auth_key", metadata,
    Column("kid", String(64), primary_key=True),
    Column("private_pem", Text, nullable=False),
    Column("created", BigInteger, nullable=False),
    Column("retired", Boolean, nullable=False, default=False),
)

auth_session = Table(  # browser login sessions (cookie holds the random id; we keep its hash)
    "auth_session", metadata,
    Column("sid_hash", String(64), primary_key=True),
    Column("user_pk", BigInteger, nullable=False),
    Column("csrf", String(64), nullable=False),
    Column("expires_at", BigInteger, nullable=False),
)

auth_initial_token = Table(  # RFC 7591 initial access tokens for dynamic registration
    "auth_initial_token", metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("created", BigInteger, nullable=False),
    Column("organization", String(64), nullable=True),
)

SMART_TABLES = (oauth_client, auth_user, auth_token, auth_code, auth_launch, auth_jti, auth_key,
                auth_session, auth_initial_token)

auth_secret = Table(  # server secrets shared by every worker (form signing)
    "auth_secret", metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

SMART_TABLES = SMART_TABLES + (auth_secret,)
