"""Grants that come from data rather than from the token: Consents, a guardian's age limit, and
the emails reserved by patients' profiles.

The token says who the caller is; these rules say, at each request, what the patients themselves
allowed (or what the law ended), so that granting, revoking or a birthday take effect at once for
searches and for tokens already issued:

- an active permit `Consent` naming an Organization or a Practitioner as `provision.actor`:
  that organization's staff (or that practitioner) see the patient's data; `provision.class`
  containing `ImagingStudy` limits it to imaging; `provision.period` limits when the grant is in
  force; `provision.dataPeriod` limits the shared data to resources dated in that window;
- the platform-wide preference "any clinician may see my imaging": an active Consent with
  `category` `urn:fhirserver:sharing|platform-imaging` (no actor needed);
- a guardian acts for a child only until `guardian_age_limit`;
- an email owned by an account, or by an unlinked, closed or deleted profile, is not reusable.

These are system lookups made to build a policy, before there is a caller to filter by.
"""
from __future__ import annotations

import dataclasses
import json
import re
from datetime import date
from typing import Any, Callable, Sequence

from sqlalchemy import and_, or_, select

from fhirserver.model import reference_id
from fhirserver.access.tables import lifecycle_email
from fhirserver.storage import idx_reference, idx_token, resource

PLATFORM_IMAGING = "platform-imaging"
IMAGING_TYPES = ("ImagingStudy", "Media")  # what an imaging-only Consent shares (with the Patient)


def _consent_grants(body: dict[str, Any], today: str, base: str | None = None) -> tuple[str | None, bool] | None:
    """(patient id, imaging only) of an effective permit Consent without a data window, else None."""
    if _data_window(body):
        return None
    if body.get("status") != "active":
        return None
    prov = body.get("provision") or {}
    if prov.get("type", "permit") != "permit":
        return None
    period = prov.get("period") or {}
    if period.get("start") and period["start"][:10] > today:
        return None
    if period.get("end") and period["end"][:10] < today:
        return None
    pid = reference_id(body.get("patient"), "Patient", base)
    imaging = any(k.get("code") in IMAGING_TYPES for k in prov.get("class") or [])
    return pid, imaging


def _data_window(body: dict[str, Any]) -> tuple[str, str] | None:
    """`provision.dataPeriod` as (start, end) ISO strings ('' for an open end), or None."""
    dp = (body.get("provision") or {}).get("dataPeriod") or {}
    if not dp.get("start") and not dp.get("end"):
        return None
    return dp.get("start") or "", dp.get("end") or ""


def _window_grant(body: dict[str, Any], today: str, base: str | None = None) -> tuple[str, str, str, bool] | None:
    """(patient id, data from, data to, imaging only) of an effective Consent limited to a data window."""
    window = _data_window(body)
    if window is None:
        return None
    plain = {**body, "provision": {k: v for k, v in (body.get("provision") or {}).items() if k != "dataPeriod"}}
    g = _consent_grants(plain, today, base)
    if not g or not g[0]:
        return None
    return g[0], window[0], window[1], g[1]


def _base(settings: Any) -> str | None:
    """The server's own base (configured, or the host and port it was started with)."""
    base = getattr(settings, "fhir_base", None)
    return base if isinstance(base, str) else None


def depends_on_live_data(p: Any) -> bool:
    """Whether the principal's reach changes with data rather than with its token: a guardian's
    children age out, staff and organization-bound clients gain and lose Consent shares. The
    policy of any other principal may be built once per token and kept."""
    return (p.role == "guardian" and bool(p.patients)) or (p.role in ("staff", "system") and not p.unrestricted)


def with_live_shares(engine: Any, p: Any, settings: Any) -> Any:
    """The principal with the shares in force now (staff), or a guardian's children under age."""
    if not depends_on_live_data(p):
        return p
    if p.role == "guardian":
        return _guardian_age_limit(engine, p, getattr(settings, "guardian_age_limit", 18))
    base = _base(settings)
    targets = [("Organization", o) for o in p.organizations]
    if p.fhir_user and p.fhir_user.startswith("Practitioner/"):
        targets.append(("Practitioner", p.fhir_user.split("/", 1)[1]))
    conds = [and_(idx_reference.c.target_type == t, idx_reference.c.target_id == i) for t, i in targets]
    q_actor = select(resource.c.body).where(
        resource.c.res_type == "Consent", resource.c.deleted.is_(False),
        resource.c.pk.in_(select(idx_reference.c.res_pk).where(
            idx_reference.c.res_type == "Consent", idx_reference.c.param == "actor", or_(*conds)))) \
        if conds else None
    q_platform = select(resource.c.body).where(
        resource.c.res_type == "Consent", resource.c.deleted.is_(False),
        resource.c.pk.in_(select(idx_token.c.res_pk).where(
            idx_token.c.res_type == "Consent", idx_token.c.param == "category",
            idx_token.c.code == PLATFORM_IMAGING)))
    today = date.today().isoformat()
    full: set[str] = set()
    imaging: set[str] = set()
    with engine.connect() as conn:
        rows = list(conn.execute(q_actor).scalars()) if q_actor is not None else []
        platform = list(conn.execute(q_platform).scalars()) if p.role == "staff" else []
    windows: set[tuple[str, str, str, bool]] = set()
    for text in rows:
        consent = json.loads(text)
        g = _consent_grants(consent, today, base)
        if g and g[0]:
            (imaging if g[1] else full).add(g[0])
        w = _window_grant(consent, today, base)
        if w:
            windows.add(w)
    for text in platform:
        g = _consent_grants(json.loads(text), today, base)
        if g and g[0]:
            imaging.add(g[0])
    if not full and not imaging and not windows:
        return p
    return dataclasses.replace(p, patients=tuple(sorted(set(p.patients) | full)),
                               shared_imaging=tuple(sorted(imaging - full - set(p.patients))),
                               shared_windows=tuple(sorted(w for w in windows if w[0] not in full)))


def platform_imaging_allowed(conn: Any, pid: str, base: str | None = None) -> bool:
    """Whether the patient lets any clinician of the platform see their imaging (an effective
    `platform-imaging` Consent): a request for imaging access is then granted without asking."""
    today = date.today().isoformat()
    for text in conn.execute(select(resource.c.body).where(
            resource.c.res_type == "Consent", resource.c.deleted.is_(False),
            resource.c.pk.in_(select(idx_token.c.res_pk).where(
                idx_token.c.res_type == "Consent", idx_token.c.param == "category",
                idx_token.c.code == PLATFORM_IMAGING)),
            resource.c.pk.in_(select(idx_reference.c.res_pk).where(
                idx_reference.c.res_type == "Consent", idx_reference.c.param == "patient",
                idx_reference.c.target_type == "Patient", idx_reference.c.target_id == pid)))).scalars():
        g = _consent_grants(json.loads(text), today, base)
        if g and g[0] == pid:
            return True
    return False


def _age(birth: str, today: date) -> int | None:
    m = re.match(r"^(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?", birth or "")
    if not m:
        return None
    y, mo, d = int(m.group(1)), int(m.group(2) or 1), int(m.group(3) or 1)
    return today.year - y - ((today.month, today.day) < (mo, d))


def _guardian_age_limit(engine: Any, p: Any, limit: int) -> Any:
    """The guardian's principal without the children who reached the age limit (or are gone)."""
    with engine.connect() as conn:
        rows = conn.execute(select(resource.c.res_id, resource.c.body).where(
            resource.c.res_type == "Patient", resource.c.res_id.in_(list(p.patients)))).all()
    today = date.today()
    keep = []
    for rid, body in rows:
        age = _age((json.loads(body) if body else {}).get("birthDate", ""), today)
        if body and (age is None or age < limit):
            keep.append(rid)
    keep_t = tuple(x for x in p.patients if x in keep)
    if keep_t == p.patients:
        return p
    return dataclasses.replace(p, patients=keep_t, patient=p.patient if p.patient in keep_t else
                               ("" if p.patient else None))


def email_owners_fn(engine: Any) -> Callable[[Sequence[str]], dict[str, tuple[str, str]]]:
    """email -> (res_type, res_id) of the profile that reserves it (see `SmartPolicy.check_write`)."""
    def owners(emails: Sequence[str]) -> dict[str, tuple[str, str]]:
        with engine.connect() as conn:
            rows = conn.execute(select(lifecycle_email).where(
                lifecycle_email.c.email.in_([e.lower() for e in emails]))).mappings()
            return {r["email"]: (r["res_type"], r["res_id"]) for r in rows}
    return owners


__all__ = ["PLATFORM_IMAGING", "depends_on_live_data", "email_owners_fn", "platform_imaging_allowed", "with_live_shares"]
