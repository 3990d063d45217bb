"""The DICOM node's questions to the access gate (`fhirserver.access`): as whom a calling AE acts,
and which studies that caller may see (which patients, orders and appointments: the policy's
row filter, applied by `dicom.fhir.search`). Every DIMSE and DICOMweb entry point asks
here; the rules themselves live in `fhirserver.access.dicom`."""
from __future__ import annotations

from typing import Any, Iterable

from sqlalchemy.engine import Connection

from dicom.nodes import get_node
from dicom.tables import dicom_study
from fhirserver import access


def node_policy(repo: Any, settings: Any, ae_title: str) -> Any:
    """The policy of the node calling as `ae_title`: a system principal of the node's
    organization, or site-wide for a node registered without one. A calling AE missing from the
    registry is site-wide only when the operator started the node with `--accept-unknown` (the
    open, single-site configuration); otherwise (removed while its association was open) it
    sees nothing."""
    from smart_auth import build_policy

    ae = (ae_title or "").strip()
    node = get_node(repo.engine, ae) if ae else None
    admitted = node is not None or not settings.dicom_reject_unknown
    principal = access.dicom_node_principal(ae or "?", node.organization if node else None, admitted=admitted)
    return build_policy(repo, settings, principal)


def visible_studies(conn: Connection, policy: Any, study_uids: Iterable[str]) -> set[str]:
    """The studies among `study_uids` the caller may see (its ImagingStudy is visible to it)."""
    return access.visible_studies(conn, policy, study_uids, dicom_study)


def visible_only(query: Any, policy: Any) -> Any:
    """`query` (selecting from the study table) narrowed to the studies the caller may see, in
    the same statement (the rule: `fhirserver.access.restrict_to_visible`)."""
    return access.restrict_to_visible(query, policy, dicom_study)


def restricted(policy: Any) -> bool:
    """Does the caller see only some studies (so a query must join the study table)?"""
    return bool(list(policy.row_filter("ImagingStudy")))


__all__ = ["node_policy", "restricted", "visible_only", "visible_studies"]
