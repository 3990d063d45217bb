"""The SMART policy: a token's Principal and scopes turned into 403s and SQL conditions.

Who sees what (the audience of each scope):
- `patient/` scopes: the compartment of the patient in context, or of every patient the user
  acts for when none was chosen (a guardian's children).
- `user/` scopes: what the user may see: a patient or guardian their own patients' compartments,
  staff the patients of their organizations, an admin everything.
- `system/` scopes (Backend Services): the client's organization's patients, or everything for a
  client bound to no organization.
Data outside every Patient compartment (Practitioner, Organization, Medication...) is shared
reference data; Patient-compartment types without a patient (e.g. an unassigned report) are
visible to staff only. Everything is a SQL condition on `resource`, so counts, includes, history
and paging can never see more than a read.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

from sqlalchemy import and_, exists, false, func, or_, select, true
from sqlalchemy.sql.elements import ColumnElement

from fhirserver.access.grants import audit_write_error, consent_write_error
from fhirserver.access.binary import PATIENT_LINKED_TYPES, with_security_context
from fhirserver.access.scopes import INTERACTION_PERM, Scope
from fhirserver.model import reference_id, referenced_ids
from fhirserver.access.lifecycle import check_delete as lifecycle_check_delete
from fhirserver.access.operations import check_operation as operation_check
from fhirserver.errors import FhirError
from fhirserver.search import SearchError, compile_search, date_range, patient_compartment_types
from fhirserver.storage import idx_date, idx_reference, idx_token, resource, resource_compartment

# Types outside the Patient compartment that hold patient data anyway: only a full-access
# principal sees them until they are linked to a patient (e.g. Binary via securityContext).
RESTRICTED_TYPES = frozenset({"Binary", "Task", "Bundle", "Parameters"})
# Types that describe several patients at once (who accessed what, who belongs together): a
# restricted caller sees one only when it may see every patient it names.
ALL_NAMED_TYPES = frozenset({"AuditEvent", "Group", "Provenance", "Linkage"})
# Patient data that names no patient yet (a report filed before its patient is known) belongs to
# the organization whose staff or client wrote it: a meta.tag the gate stamps and filters on.
OWNER_TAG = "urn:fhirserver:owner"
IMAGING_TYPES = ("ImagingStudy", "Media")  # what an imaging-only Consent shares (with the Patient)
# A Subscription (its endpoint, its header secrets, what it was told) belongs to whoever wrote it
# last: a meta.tag the gate stamps on every write, and the only restricted callers who see it.
SUBSCRIBER_TAG = "urn:fhirserver:subscriber"
OWN_TYPES = frozenset({"Subscription"})


def subscriber_code(p: "Principal") -> str:
    """The subscriber tag's code for a principal: its login, or its client for a backend."""
    return f"user:{p.user_pk}" if p.user_pk is not None else f"client:{p.client_id}"


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who is calling: a user through an app, or a system client, with granted scopes."""

    client_id: str
    role: str  # patient | guardian | staff | admin | system
    scopes: tuple[Scope, ...]
    scope_text: str = ""
    patient: str | None = None  # the patient in context (launch or picker)
    patients: tuple[str, ...] = ()  # every patient the user acts for
    organizations: tuple[str, ...] = ()
    fhir_user: str | None = None
    user_pk: int | None = None
    token_pk: int | None = None
    # patients whose imaging only is shared with this staff member/organization (Consent)
    shared_imaging: tuple[str, ...] = ()
    # Consents limited to a data window: (patient id, from, to, imaging only); '' is open
    shared_windows: tuple[tuple[str, str, str, bool], ...] = ()

    @property
    def unrestricted(self) -> bool:
        return self.role == "admin" or (self.role == "system" and not self.organizations)


def resource_pk_true() -> ColumnElement[bool]:
    return resource.c.pk.isnot(None)


def _forbidden(msg: str) -> Exception:
    return FhirError(403, msg, "forbidden")


def patient_refs(body: Any, base: str | None = None) -> set[str]:
    """Ids of every Patient a resource body references (the canonical reference parser)."""
    return referenced_ids(body, "Patient", base)


# Dates that are not clinical time: a data window never matches on them.
_NOT_CLINICAL_DATES = ("birthdate", "death-date", "_lastUpdated")


def _window_members(windows: Sequence[tuple[str, str, str, bool]]) -> list[ColumnElement[bool]]:
    """A Consent's data window: the patient, and compartment resources dated inside the window."""
    from datetime import datetime, timezone

    far_past = datetime(1, 1, 2, tzinfo=timezone.utc)
    far_future = datetime(9999, 12, 30, tzinfo=timezone.utc)
    r, rc, d = resource, resource_compartment, idx_date
    out: list[ColumnElement[bool]] = []
    for pid, start, end, imaging in windows:
        try:
            low = date_range(start)[0] if start else far_past
            high = date_range(end)[1] if end else far_future
        except ValueError:
            continue
        out.append(and_(r.c.res_type == "Patient", r.c.res_id == pid))
        conds = [r.c.res_type != "Patient",
                 exists(select(1).where(rc.c.res_pk == r.c.pk, rc.c.comp_type == "Patient", rc.c.comp_id == pid)),
                 exists(select(1).where(d.c.res_pk == r.c.pk, d.c.param.notin_(_NOT_CLINICAL_DATES),
                                        func.coalesce(d.c.low, far_past) < high,
                                        func.coalesce(d.c.high, far_future) > low))]
        if imaging:
            conds.append(r.c.res_type.in_(IMAGING_TYPES))
        out.append(and_(*conds))
    return out


def _window_dates_valid(window: tuple[str, str, str, bool]) -> bool:
    """Whether a Consent window's dates parse (`_window_members` skips a window whose do not)."""
    try:
        for value in window[1:3]:
            if value:
                date_range(value)
    except ValueError:
        return False
    return True


def _tagged(body: dict[str, Any], system: str, code: str) -> dict[str, Any]:
    """The body with exactly one meta.tag of `system`, with `code`."""
    meta = dict(body.get("meta") or {})
    tags = [t for t in meta.get("tag") or [] if not (isinstance(t, dict) and t.get("system") == system)]
    meta["tag"] = tags + [{"system": system, "code": code}]
    return {**body, "meta": meta}


class SmartPolicy:
    """Implements `fhirserver.access.Policy` for one request's Principal."""

    def __init__(self, principal: Principal, *, postgres: bool = False,
                 org_patients: Callable[[Sequence[str], Sequence[str]], set[str]] | None = None,
                 email_owners: Callable[[Sequence[str]], dict[str, tuple[str, str]]] | None = None,
                 base: str | None = None) -> None:
        self.p = principal
        self.principal = principal  # who this policy decides for (Context.principal)
        self.base = base  # our own base URL: absolute references to it are local
        self._email_owners = email_owners  # reserved emails -> (res_type, res_id): no takeover by a new profile
        self.postgres = postgres
        self._org_patients = org_patients  # (orgs, candidate patient ids) -> those in the orgs
        self._cache: dict[tuple[str | None, str], tuple[ColumnElement[bool], ...]] = {}

    # -- interactions -----------------------------------------------------------------
    def _scopes_for(self, perm: str, res_type: str | None) -> list[Scope]:
        return [s for s in self.p.scopes if s.allows(perm, res_type)]

    def check_interaction(self, interaction: str, res_type: str | None) -> None:
        perm = INTERACTION_PERM.get(interaction, "r")
        if not self._scopes_for(perm, res_type):
            what = res_type or "the whole server"
            raise _forbidden(f"The token's scopes do not allow '{interaction}' on {what}")

    # -- audiences as SQL ----------------------------------------------------------------
    def _patient_ids(self, context: str) -> tuple[str, ...] | None:
        """Patients a scope context reaches; None = every patient."""
        p = self.p
        if context == "patient":
            if p.patient:
                return (p.patient,)
            return p.patients
        if p.unrestricted:
            return None
        if p.role in ("patient", "guardian"):
            return p.patients
        return p.patients  # staff/system: explicit shares; organizations are added in SQL

    def _audience(self, context: str, res_type: str | None = None) -> ColumnElement[bool] | None:
        """The rows a scope context reaches, as one SQL condition on `resource` (None: all).

        For a known type, the branches that cannot hold a row of it are left out and every
        patient-based branch is one EXISTS over the row's Patient compartment (a Patient is in
        its own): a semi-join PostgreSQL plans like any join, probing it per row in a page walk
        and hashing it for a count, where an OR of correlated subqueries (with the org's
        patients rebuilt inside them) took seconds at 100k patients."""
        p = self.p
        if context != "patient" and p.unrestricted:
            return None
        t = res_type
        if t is None:
            return self._audience_any(context, res_type)
        r, rc = resource, resource_compartment
        ids = tuple(self._patient_ids(context) or ())
        staff = context != "patient" and p.role in ("staff", "system")
        org_scope = staff and p.organizations
        members: list[ColumnElement[bool]] = []
        comp = resource_compartment.alias("audience_comp")
        comp_ids = list(ids)
        if staff and p.shared_imaging and (t == "Patient" or t in IMAGING_TYPES):
            comp_ids += list(p.shared_imaging)  # imaging-only Consents: the Patient and its imaging
        if staff and p.shared_windows:
            if t == "Patient":
                comp_ids += [w[0] for w in p.shared_windows if _window_dates_valid(w)]
            else:
                members.extend(m for m in _window_members(p.shared_windows)[1::2])
        via: list[ColumnElement[bool]] = []
        if comp_ids:
            via.append(comp.c.comp_id.in_(sorted(set(comp_ids))))
        if org_scope:
            pat = resource.alias("org_patient")
            ref = idx_reference.alias("org_ref")
            via.append(exists(select(1).where(
                pat.c.res_type == "Patient", pat.c.res_id == comp.c.comp_id, ref.c.res_pk == pat.c.pk,
                ref.c.res_type == "Patient", ref.c.param == "organization",
                ref.c.target_type == "Organization", ref.c.target_id.in_(p.organizations))))
        if via:
            members.insert(0, exists(select(1).where(comp.c.res_pk == r.c.pk, comp.c.comp_type == "Patient",
                                                     or_(*via))))
        if t not in patient_compartment_types() | RESTRICTED_TYPES | OWN_TYPES:
            members.append(true())  # reference data (Practitioner, Organization...): everyone's
        if t in OWN_TYPES:
            mine = idx_token.alias("subscriber_tag")
            members.append(exists(select(1).where(
                mine.c.res_pk == r.c.pk, mine.c.param == "_tag", mine.c.system == SUBSCRIBER_TAG,
                mine.c.code == subscriber_code(p))))
        if staff and t not in ("Patient",) + tuple(RESTRICTED_TYPES | OWN_TYPES):
            # patient-compartment data not yet attached to any patient (a report filed later)
            # (never a deleted row: one whose compartment rows were lost must not open to all staff)
            tag = idx_token.alias("owner_tag")
            members.append(and_(r.c.deleted.is_(False),
                                ~exists(select(1).where(rc.c.res_pk == r.c.pk, rc.c.comp_type == "Patient")),
                                ~exists(select(1).where(tag.c.res_pk == r.c.pk, tag.c.param == "_tag",
                                                        tag.c.system == OWNER_TAG,
                                                        tag.c.code.notin_(p.organizations or ("",))))))
        audience = or_(*members) if members else false()
        if t not in ALL_NAMED_TYPES:
            return audience
        # a record naming several patients is seen only by who may see every one of them
        outside = [rc.c.res_pk == r.c.pk, rc.c.comp_type == "Patient"]
        if ids:
            outside.append(rc.c.comp_id.notin_(ids))
        if org_scope:
            pat2 = resource.alias("named_patient")
            ref2 = idx_reference.alias("named_ref")
            outside.append(rc.c.comp_id.notin_(select(pat2.c.res_id).where(
                pat2.c.pk == ref2.c.res_pk, ref2.c.res_type == "Patient", ref2.c.param == "organization",
                ref2.c.target_type == "Organization", ref2.c.target_id.in_(p.organizations))))
        return and_(audience, ~exists(select(1).where(*outside)))

    def _audience_any(self, context: str, res_type: str | None = None) -> ColumnElement[bool] | None:
        """`_audience` for a search over every type: each branch carries its type condition."""
        r, rc = resource, resource_compartment
        p = self.p
        if context != "patient" and p.unrestricted:
            return None
        ids = self._patient_ids(context) or ()
        org_scope = context != "patient" and p.role in ("staff", "system") and p.organizations
        members: list[ColumnElement[bool]] = []
        org_ids = None
        if ids:
            members.append(and_(r.c.res_type == "Patient", r.c.res_id.in_(ids)))
            members.append(exists(select(1).where(
                rc.c.res_pk == r.c.pk, rc.c.comp_type == "Patient", rc.c.comp_id.in_(ids))))
        if org_scope:
            pat = resource.alias("org_patient")
            ref = idx_reference.alias("org_ref")
            org_ids = select(pat.c.res_id).where(
                pat.c.pk == ref.c.res_pk, ref.c.res_type == "Patient", ref.c.param == "organization",
                ref.c.target_type == "Organization", ref.c.target_id.in_(p.organizations))
            members.append(and_(r.c.res_type == "Patient", r.c.pk.in_(
                select(ref.c.res_pk).where(ref.c.res_type == "Patient", ref.c.param == "organization",
                                           ref.c.target_type == "Organization",
                                           ref.c.target_id.in_(p.organizations)))))
            members.append(exists(select(1).where(
                rc.c.res_pk == r.c.pk, rc.c.comp_type == "Patient", rc.c.comp_id.in_(org_ids))))
        if context != "patient" and p.role in ("staff", "system") and p.shared_imaging:
            # imaging-only Consents: the Patient and its imaging, nothing else
            img = p.shared_imaging
            members.append(and_(r.c.res_type == "Patient", r.c.res_id.in_(img)))
            members.append(and_(r.c.res_type.in_(IMAGING_TYPES), exists(select(1).where(
                rc.c.res_pk == r.c.pk, rc.c.comp_type == "Patient", rc.c.comp_id.in_(img)))))
        if context != "patient" and p.role in ("staff", "system") and p.shared_windows:
            members.extend(_window_members(p.shared_windows))
        members.append(r.c.res_type.notin_(patient_compartment_types() | RESTRICTED_TYPES | OWN_TYPES))
        mine = idx_token.alias("subscriber_tag")
        members.append(and_(r.c.res_type.in_(OWN_TYPES), exists(select(1).where(
            mine.c.res_pk == r.c.pk, mine.c.param == "_tag", mine.c.system == SUBSCRIBER_TAG,
            mine.c.code == subscriber_code(p)))))
        if context != "patient" and p.role in ("staff", "system"):
            # patient-compartment data not yet attached to any patient (a report filed later)
            # (never a deleted row: one whose compartment rows were lost must not open to all staff)

            tag = idx_token.alias("owner_tag")
            members.append(and_(r.c.res_type.notin_(("Patient",) + tuple(RESTRICTED_TYPES | OWN_TYPES)),
                                r.c.deleted.is_(False),
                                ~exists(select(1).where(rc.c.res_pk == r.c.pk, rc.c.comp_type == "Patient")),
                                ~exists(select(1).where(tag.c.res_pk == r.c.pk, tag.c.param == "_tag",
                                                        tag.c.system == OWNER_TAG,
                                                        tag.c.code.notin_(p.organizations or ("",))))))
        audience = or_(*members)
        if res_type is not None and res_type not in ALL_NAMED_TYPES:
            return audience
        # a record naming several patients is seen only by who may see every one of them
        outside = [rc.c.res_pk == r.c.pk, rc.c.comp_type == "Patient"]
        if ids:
            outside.append(rc.c.comp_id.notin_(ids))
        if org_ids is not None:
            outside.append(rc.c.comp_id.notin_(org_ids))
        guard = ~exists(select(1).where(*outside))
        if res_type is None:
            guard = or_(r.c.res_type.notin_(ALL_NAMED_TYPES), guard)
        return and_(audience, guard)

    def _query_filter(self, scope: Scope, res_type: str) -> ColumnElement[bool]:
        try:
            compiled = compile_search(res_type, list(scope.query), postgres=self.postgres, strict=True)
        except SearchError:
            return false()  # a restriction we cannot evaluate grants nothing
        if not compiled.where:
            return false() if not scope.query else resource_pk_true()
        return and_(*compiled.where)

    def _filter(self, res_type: str | None, perms: str) -> tuple[ColumnElement[bool], ...]:
        key = (res_type, perms)
        if key in self._cache:
            return self._cache[key]

        scopes = [s for s in self.p.scopes if s.perms & set(perms)
                  and (res_type is None or s.res_type in ("*", res_type))]
        if not scopes:
            result: tuple[ColumnElement[bool], ...] = (false(),)
        else:
            branches: list[ColumnElement[bool]] = []
            open_ = False
            for s in scopes:
                types = None if s.res_type == "*" else s.res_type
                aud = self._audience(s.context, types or res_type)
                conds: list[ColumnElement[bool]] = []
                if types is not None and res_type is None:
                    conds.append(resource.c.res_type == types)
                if aud is not None:
                    conds.append(aud)
                if s.query:
                    if types is None:  # a query on '*' cannot be compiled per type: grants nothing
                        continue
                    conds.append(self._query_filter(s, types))
                if not conds:
                    open_ = True
                    break
                branches.append(and_(*conds) if len(conds) > 1 else conds[0])
            if open_:
                result = ()
            else:
                result = (or_(*branches),) if branches else (false(),)
            result = with_security_context(result, res_type, any(s.res_type in ("*", "Binary") for s in scopes),
                                           lambda t: self._filter(t, perms))
        self._cache[key] = result
        return result

    def row_filter(self, res_type: str | None) -> Sequence[ColumnElement[bool]]:
        return self._filter(res_type, "rs")

    def check_operation(self, name: str, res_type: str | None) -> None:
        operation_check(self.p, name, res_type)

    def check_delete(self, tx: Any, res_type: str, res_id: str) -> None:
        lifecycle_check_delete(tx, self.p, res_type, res_id)

    # -- writes -------------------------------------------------------------------------
    def check_write(self, res_type: str, body: dict[str, Any]) -> None:
        p = self.p
        if res_type == "Patient" and self._email_owners is not None:
            self._check_reserved_email(body)
        scopes = [s for s in self.p.scopes if s.perms & {"c", "u"} and s.res_type in ("*", res_type)]
        if not scopes:
            raise _forbidden(f"The token's scopes do not allow writing {res_type}")
        errors = []
        for s in scopes:
            msg = self._write_error(s, res_type, body)
            if msg is None:
                return
            errors.append(msg)
        raise _forbidden(errors[0])

    def owned(self, res_type: str, body: dict[str, Any]) -> dict[str, Any]:
        """The body as stored: patient data naming no patient, written by an organization's staff
        or client, carries that organization's owner tag (and no owner tag of another)."""
        p = self.p
        if res_type in OWN_TYPES:
            return _tagged(body, SUBSCRIBER_TAG, subscriber_code(p))
        if p.unrestricted or p.role not in ("staff", "system") or not p.organizations \
                or res_type == "Patient" or res_type not in patient_compartment_types():
            return body
        if patient_refs(body, self.base):
            return body
        meta = dict(body.get("meta") or {})
        tags = [t for t in meta.get("tag") or [] if not (isinstance(t, dict) and t.get("system") == OWNER_TAG)]
        mine = [t for t in meta.get("tag") or [] if isinstance(t, dict) and t.get("system") == OWNER_TAG
                and t.get("code") in p.organizations][:1]
        meta["tag"] = tags + (mine or [{"system": OWNER_TAG, "code": p.organizations[0]}])
        return {**body, "meta": meta}

    def check_new_id(self, res_type: str) -> None:
        """Only a full-access caller creates under an id of its choosing (PUT to a new id).

        Anyone else is refused whether or not the id exists, so the answer never tells that
        another patient's or organization's resource has that id."""
        if any(s.context != "patient" and s.perms & {"c", "u"} and s.res_type in ("*", res_type)
               for s in self.p.scopes) and self.p.unrestricted:
            return
        raise _forbidden(f"This token may not write {res_type} resources under an id of its choosing: "
                         "create them with POST")

    def _check_reserved_email(self, body: dict[str, Any]) -> None:
        """An email owned by an account, or of an unlinked/closed profile, is not reusable: whoever
        creates a profile with it would be sent that person's invitations and links."""
        emails = [t["value"].strip().lower() for t in body.get("telecom") or []
                  if t.get("system") == "email" and isinstance(t.get("value"), str)]
        if not emails or self._email_owners is None:
            return
        for email, (owner_type, owner_id) in self._email_owners(emails).items():
            if owner_type == "Patient" and owner_id != body.get("id"):
                raise FhirError(409, f"The email address {email} is reserved by another profile; find the patient "
                                "by email and request access, or have the account reactivated", "duplicate")

    def _write_error(self, s: Scope, res_type: str, body: dict[str, Any]) -> str | None:
        p = self.p
        if s.context != "patient" and p.unrestricted:
            return None
        if res_type == "AuditEvent":
            return audit_write_error(p)
        if res_type == "Consent":
            refused = consent_write_error(p, body, self.base)
            if refused:
                return refused
        if res_type == "Subscription":
            # anyone with write scope may subscribe: what it is told of is narrowed by its writer's
            # own read access whenever an event is matched (fhirserver.subscriptions)
            return None
        ids = set(self._patient_ids(s.context) or ())
        staff = s.context != "patient" and p.role in ("staff", "system")
        refs = patient_refs(body, self.base)
        if res_type == "Patient":
            rid = body.get("id")
            refs.discard(rid)
            if not (rid and rid in ids):
                if not (staff and p.organizations):
                    return "This token may not write Patient resources other than its own patients"
                org = reference_id(body.get("managingOrganization"), "Organization", self.base)
                if org not in p.organizations:
                    return "A Patient written with this token must belong to one of its organizations"
            if not refs:
                return None  # links to other patients are checked below like any reference
        elif res_type not in patient_compartment_types() | PATIENT_LINKED_TYPES:
            if staff:
                return None
            return f"This token may not write {res_type} resources"
        elif not refs:
            if staff:
                return None
            return f"The {res_type} must reference the token's patient"
        outside = refs - ids
        if outside and staff and p.organizations and self._org_patients is not None:
            outside -= self._org_patients(p.organizations, sorted(outside))
        if outside:
            return f"The {res_type} references patients outside the token's access"
        return None


__all__ = ["ALL_NAMED_TYPES", "Principal", "SmartPolicy", "patient_compartment_types", "patient_refs"]
