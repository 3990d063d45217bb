"""SMART scopes, v1 (`patient/*.read`) and v2 (`patient/Observation.rs?category=laboratory`).

A `Scope` is (context, resource type, permissions, query). Permissions are a set of c r u d s;
v1 `read` means r+s, `write` means c+u+d, `*` means all five.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Iterable
from urllib.parse import parse_qsl

PERMS = "cruds"
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_RE = re.compile(r"^(patient|user|system)/([A-Za-z]+|\*)\.([a-z*]+)(?:\?(.*))?$")
# identity and launch scopes that carry no data permission
NON_RESOURCE = {"openid", "fhirUser", "profile", "launch", "launch/patient", "launch/encounter",
                "offline_access", "online_access"}

INTERACTION_PERM = {"read": "r", "vread": "r", "search": "s", "history": "s", "create": "c",
                    "update": "u", "patch": "u", "delete": "d", "operation": "r"}


@dataclasses.dataclass(frozen=True)
class Scope:
    context: str  # patient | user | system
    res_type: str  # a type or "*"
    perms: frozenset[str]
    query: tuple[tuple[str, str], ...] = ()
    text: str = ""

    def allows(self, perm: str, res_type: str | None) -> bool:
        return perm in self.perms and (self.res_type == "*" or res_type is None
                                       or self.res_type == res_type)

    def covers(self, other: "Scope") -> bool:
        """True when this (granted) scope includes everything `other` asks for."""
        ctx_ok = self.context == other.context
        type_ok = self.res_type == "*" or self.res_type == other.res_type
        query_ok = not self.query or self.query == other.query
        return ctx_ok and type_ok and other.perms <= self.perms and query_ok


def parse_scope(text: str) -> Scope | None:
    """A resource scope, or None for anything else (identity/launch scopes, unknown words)."""
    m = _RE.match(text)
    if not m:
        return None
    context, res_type, perm, query = m.groups()
    if perm in _V1:
        perms = frozenset(_V1[perm])
    else:
        # v2: letters in the order c r u d s, each at most once
        if not perm or any(c not in PERMS for c in perm) or "".join(sorted(perm, key=PERMS.index)) != perm \
                or len(set(perm)) != len(perm):
            return None
        perms = frozenset(perm)
    q = tuple(parse_qsl(query, keep_blank_values=True)) if query else ()
    return Scope(context, res_type, perms, q, text)


def split(scope: str | None) -> list[str]:
    return [s for s in (scope or "").split() if s]


def parse_scopes(scopes: Iterable[str]) -> list[Scope]:
    return [s for s in (parse_scope(t) for t in scopes) if s is not None]


def narrow(requested: Iterable[str], allowed: Iterable[str]) -> list[str]:
    """The requested scopes a client may have: identity scopes it lists, resource scopes that one
    of its allowed scopes covers. Unknown words are dropped."""
    allowed = list(allowed)
    allowed_res = parse_scopes(allowed)
    out: list[str] = []
    for text in requested:
        if text in out:
            continue
        if text in NON_RESOURCE:
            if text in allowed or not allowed:
                out.append(text)
            continue
        sc = parse_scope(text)
        if sc is None:
            continue
        if any(a.covers(sc) for a in allowed_res):
            out.append(text)
    return out


def describe(text: str) -> str:
    """Plain language for the consent page."""
    fixed = {
        "openid": "Know who you are (sign you in)",
        "fhirUser": "Know who you are in the record (your patient, practitioner or guardian profile)",
        "profile": "See your name",
        "launch": "Open with the record you are looking at",
        "launch/patient": "Choose which patient's record to use",
        "launch/encounter": "Use the current visit",
        "offline_access": "Keep access when you are not using the app, until you revoke it",
        "online_access": "Keep access while you are signed in",
    }
    if text in fixed:
        return fixed[text]
    sc = parse_scope(text)
    if sc is None:
        return text
    verbs = []
    names = {"r": "read", "s": "search", "c": "create", "u": "change", "d": "delete"}
    for p in PERMS:
        if p in sc.perms:
            verbs.append(names[p])
    what = "all kinds of records" if sc.res_type == "*" else f"{sc.res_type} records"
    whose = {"patient": "of the selected patient", "user": "you can see", "system": "on the server"}[sc.context]
    extra = ""
    if sc.query:
        extra = " where " + ", ".join(f"{k} is {v}" for k, v in sc.query)
    return f"{', '.join(verbs).capitalize()} {what} {whose}{extra}"
