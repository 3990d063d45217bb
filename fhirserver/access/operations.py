"""What each `$operation` needs from its caller, declared in one table and checked before it runs.

An operation is not one FHIR interaction: `$erase` deletes and rewrites every type of a patient's
record, `$merge` repoints them, `$access-log` reads AuditEvents. The generic "operation" check
(read permission on the URL's type) would let a read-only token erase a patient. So every
operation declares

- the scope permissions it needs, per resource type (`*`: a scope on every type, since the
  operation touches all of them; `None`: the type in the URL), all of which the token must hold;
- the principal kinds that may call it (an admin always may);
- whether it needs a principal that sees everything (server maintenance such as `$reindex`).

`guard_all` wraps the operation handlers so that the policy's `check_operation` runs first; an
operation missing from the table is refused (fails closed). The operation still narrows what it
touches with the row filter; this table only decides whether it may run at all.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping

from fhirserver.errors import FhirError

ANYONE = frozenset({"patient", "guardian", "staff", "admin", "system"})
PATIENTS = frozenset({"patient", "guardian"})
STAFF = frozenset({"staff"})
WRITE = "cud"  # SMART v1 `write`


@dataclasses.dataclass(frozen=True)
class OperationNeeds:
    """scopes: (permissions, resource type) pairs the token must hold, each of them."""

    scopes: tuple[tuple[str, str | None], ...]
    principals: frozenset[str]
    unrestricted: bool = False


OPERATION_NEEDS: Mapping[str, OperationNeeds] = {
    # erasure and merge rewrite the whole record: write on every type, by staff (the patient may
    # erase their own record: the right to erasure)
    "$erase": OperationNeeds(((WRITE, "*"),), STAFF | {"patient"}),
    "$merge": OperationNeeds(((WRITE, "*"),), STAFF),
    "$reindex": OperationNeeds((("u", "*"),), frozenset({"system"}), unrestricted=True),
    # the lifecycle of a profile
    "$invite": OperationNeeds((("ru", None),), STAFF),
    "$unlink": OperationNeeds((("ru", "Patient"), ("u", "Consent")), STAFF),
    "$reactivate": OperationNeeds((("u", "Patient"),), STAFF),
    "$close": OperationNeeds((("ru", "Patient"),), frozenset({"patient"})),
    # sharing
    "$find-by-email": OperationNeeds((("s", "Patient"),), STAFF),
    "$request-access": OperationNeeds((("s", "Patient"),), STAFF),
    # the patient answers; staff answer only for a profile no account owns (access.lifecycle)
    "$access-requests": OperationNeeds((("r", "Patient"),), PATIENTS | STAFF),
    "$respond-access": OperationNeeds((("r", "Patient"), ("c", "Consent")), PATIENTS | STAFF),
    "$access-log": OperationNeeds((("r", "Patient"), ("rs", "AuditEvent")), PATIENTS | STAFF),
    "$connected-apps": OperationNeeds((("r", "Patient"),), PATIENTS),
    "$revoke-app": OperationNeeds((("ru", "Patient"),), PATIENTS),
    # reads: what they return is filtered like any read
    "$everything": OperationNeeds((("rs", "Patient"),), ANYONE),
    "$render": OperationNeeds((("r", "DiagnosticReport"),), ANYONE),
    # a Subscription's state and past notifications (each focus filtered like any read)
    "$status": OperationNeeds((("r", "Subscription"),), ANYONE),
    "$events": OperationNeeds((("r", "Subscription"),), ANYONE),
    # Bulk Data export: backend services and staff, never a patient's app. No scope is needed to
    # start one: each type is exported only if the token may search it (else it is reported in
    # the manifest's errors), through the caller's row filter like a search
    "$export": OperationNeeds((), STAFF | {"system"}),
}


def _forbidden(msg: str) -> Exception:
    return FhirError(403, msg, "forbidden")


def _held(principal: Any, perm: str, res_type: str) -> bool:
    """A granted scope with `perm` on `res_type` ('*': a scope on every type)."""
    for s in principal.scopes:
        if perm in s.perms and (s.res_type == "*" or (res_type != "*" and s.res_type == res_type)):
            return True
    return False


def check_operation(principal: Any, name: str, res_type: str | None) -> None:
    """Raise 403 unless the principal may run operation `name` invoked on `res_type`."""
    needs = OPERATION_NEEDS.get(name)
    if needs is None:
        raise _forbidden(f"The operation {name} declares no access needs: it is not available")
    if principal.role != "admin" and principal.role not in needs.principals:
        raise _forbidden(f"The operation {name} is not available to {principal.role} users")
    if needs.unrestricted and not principal.unrestricted:
        raise _forbidden(f"The operation {name} needs a principal with access to the whole server")
    for perms, on in needs.scopes:
        target = on if on is not None else (res_type or "*")
        for perm in perms:
            if not _held(principal, perm, target):
                what = "every resource type" if target == "*" else target
                raise _forbidden(f"The token's scopes do not allow {name}: it needs '{perm}' on {what}")


Handler = Callable[[Any, Any, Any], Any]


def guarded(name: str, handler: Handler) -> Handler:
    """The handler, run only after the caller's policy allowed operation `name`."""
    @functools.wraps(handler)
    def run(ctx: Any, tx: Any, req: Any) -> Any:
        ctx.access.check_operation(name, req.res_type)
        return handler(ctx, tx, req)
    return run


def guard_all(handlers: Mapping[str, Handler]) -> dict[str, Handler]:
    return {name: guarded(name, h) for name, h in handlers.items()}


__all__ = ["OPERATION_NEEDS", "OperationNeeds", "check_operation", "guard_all", "guarded"]
