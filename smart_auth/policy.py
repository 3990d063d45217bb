"""The SMART policy of a principal, in a request or outside one (the DICOM node, launch checks).

Its own module so that both the request hooks (smart_auth.fhir) and the launch rules
(smart_auth.launch) use it without importing each other.
"""
from __future__ import annotations

from typing import Any, Sequence

from sqlalchemy import select

from fhirserver.access import Principal, SmartPolicy, email_owners_fn, with_live_shares
from fhirserver.storage import idx_reference, resource


def _org_patients_fn(engine: Any):  # noqa: ANN202
    def org_patients(orgs: Sequence[str], candidates: Sequence[str]) -> set[str]:
        q = select(resource.c.res_id).where(
            resource.c.res_type == "Patient", resource.c.res_id.in_(list(candidates)),
            resource.c.pk == idx_reference.c.res_pk, idx_reference.c.param == "organization",
            idx_reference.c.target_type == "Organization", idx_reference.c.target_id.in_(list(orgs)))
        with engine.connect() as c:
            return set(c.execute(q).scalars())
    return org_patients


def build_policy(repo: Any, settings: Any, principal: Principal) -> SmartPolicy:
    """The policy of a principal, outside a request too (the DICOM node's modalities)."""
    principal = with_live_shares(repo.engine, principal, settings)
    # the same base the index reads absolute references against, so both read them alike
    base = settings.fhir_base
    return SmartPolicy(principal, postgres=repo.postgres, org_patients=_org_patients_fn(repo.engine),
                       email_owners=email_owners_fn(repo.engine), base=base)


__all__ = ["build_policy"]
