"""Who may see which DICOM study, and as whom a DICOM node acts.

A DICOM study is patient data like any other: it is visible exactly when its ImagingStudy is, by
the same policy the REST API applies. DIMSE (C-FIND, C-MOVE, C-GET, C-STORE matching, the
worklist) and DICOMweb (QIDO, WADO, STOW) both ask here, never decide themselves.

A DICOM node has no token: it is known by its calling AE title, registered by an operator, and
acts as a Backend Services client would. A node bound to an organization is a system principal
of that organization (that organization's patients, and what their Consents share with it); a
node registered without one is a site-wide system client (every patient), which is what an
operator configures by leaving the organization out.
"""
from __future__ import annotations

from typing import Iterable, Sequence

from sqlalchemy import and_, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql import FromClause, Select

from fhirserver.access.scopes import parse_scopes
from fhirserver.access.smart import Principal
from fhirserver.storage import resource

# What a node does: query and retrieve (read, search) and send scans (create, update); never delete.
NODE_SCOPES = ("system/*.crus",)
_CHUNK = 500


def dicom_node_principal(ae_title: str, organization: str | None, *, admitted: bool = True) -> Principal:
    """The principal of a DICOM node: a system client named after its AE title, bound to its
    organization when it has one (None: site-wide, the operator's choice). A node that is not
    `admitted` (e.g. removed from the registry while its association was open) gets no scopes:
    it sees nothing, fails closed."""
    orgs = (organization,) if organization else ()
    scopes = NODE_SCOPES if admitted else ()
    return Principal(client_id=f"dicom:{ae_title}", role="system",
                     scopes=tuple(parse_scopes(list(scopes))), scope_text=" ".join(scopes),
                     organizations=orgs)


def _chunks(values: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(values), _CHUNK):
        yield values[i:i + _CHUNK]


def visible_studies(conn: Connection, policy: object, study_uids: Iterable[str], studies: FromClause) -> set[str]:
    """The subset of `study_uids` whose ImagingStudy the policy lets the caller see.

    `studies` is the DICOM node's study table (columns `study_uid`, `imaging_study_id`): the
    bridge's own link between a Study Instance UID and its ImagingStudy. It is the link that
    counts, not an ImagingStudy.identifier anyone with write access could copy. A study without
    an ImagingStudy yet (or whose ImagingStudy is deleted) is visible only to an unrestricted
    caller."""
    uids = sorted(set(study_uids))
    conds = list(policy.row_filter("ImagingStudy"))  # type: ignore[attr-defined]
    if not conds or not uids:
        return set(uids)
    uid_col, is_col = studies.c.study_uid, studies.c.imaging_study_id
    join = studies.join(resource, and_(resource.c.res_type == "ImagingStudy", resource.c.res_id == is_col))
    out: set[str] = set()
    for chunk in _chunks(uids):
        q = (select(uid_col).select_from(join)
             .where(uid_col.in_(list(chunk)), resource.c.deleted.is_(False), *conds))
        out.update(conn.execute(q).scalars())
    return out


def restrict_to_visible(query: Select, policy: object, studies: FromClause) -> Select:
    """`query` (which selects from the study table `studies`) narrowed to the studies whose
    ImagingStudy the policy lets the caller see: the same rule as `visible_studies`, folded into
    the caller's own query so that a QIDO or WADO request is one indexed query, not a lookup
    and then an access check. Unchanged for an unrestricted caller (no ImagingStudy needed)."""
    conds = list(policy.row_filter("ImagingStudy"))  # type: ignore[attr-defined]
    if not conds:
        return query
    joined = query.join(resource, and_(resource.c.res_type == "ImagingStudy",
                                       resource.c.res_id == studies.c.imaging_study_id))
    return joined.where(resource.c.deleted.is_(False), *conds)


def organization_of(policy: object) -> str | None:
    """The organization records created for this caller belong to (its only one), else None:
    a scan from a clinic's modality creates that clinic's unreconciled Patient."""
    principal = getattr(policy, "p", None)
    orgs = tuple(getattr(principal, "organizations", ()) or ())
    return orgs[0] if len(orgs) == 1 else None


__all__ = ["NODE_SCOPES", "dicom_node_principal", "organization_of", "restrict_to_visible", "visible_studies"]
