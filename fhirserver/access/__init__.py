"""The access policy (who may see what), called by every entry point."""
from fhirserver.access.policy import DenyPolicy, OpenPolicy, Policy, SystemJob
from fhirserver.access.scopes import Scope, parse_scope, parse_scopes
from fhirserver.access.smart import ALL_NAMED_TYPES, Principal, SmartPolicy, patient_compartment_types

__all__ = ["ALL_NAMED_TYPES", "DenyPolicy", "OpenPolicy", "Policy", "SystemJob", "Principal", "Scope", "SmartPolicy",
           "parse_scope", "parse_scopes", "patient_compartment_types"]
from fhirserver.access.dicom import dicom_node_principal, organization_of, restrict_to_visible, visible_studies  # noqa: E402

__all__ += ["dicom_node_principal", "organization_of", "restrict_to_visible", "visible_studies"]
from fhirserver.access.binary import PROXY_TYPES, with_security_context  # noqa: E402  Binary.securityContext
from fhirserver.access.jobs import job_policy, job_principal  # noqa: E402  named internal jobs

__all__ += ["PROXY_TYPES", "job_policy", "job_principal", "with_security_context"]
from fhirserver.access.operations import OPERATION_NEEDS, OperationNeeds, check_operation, guard_all  # noqa: E402

__all__ += ["OPERATION_NEEDS", "OperationNeeds", "check_operation", "guard_all"]
from fhirserver.access.reads import read_conditions  # noqa: E402  reads by id, compiled once per audience

__all__ += ["read_conditions"]
# Generic names in fhirserver.access.scopes get the word "scopes" here (callers may alias them back).
from fhirserver.access.scopes import (  # noqa: E402
    NON_RESOURCE as NON_RESOURCE_SCOPES, describe as describe_scopes, narrow as narrow_scopes, split as split_scopes,
)

__all__ += ["NON_RESOURCE_SCOPES", "describe_scopes", "narrow_scopes", "split_scopes"]
# The sharing rules (Consent grants, the guardian's age limit) and the lifecycle's tables and checks.
from fhirserver.access.consent import (  # noqa: E402
    PLATFORM_IMAGING, depends_on_live_data, email_owners_fn, platform_imaging_allowed, with_live_shares,
)
from fhirserver.access.lifecycle import check_answers_access, check_reactivate  # noqa: E402
from fhirserver.access.tables import (  # noqa: E402
    lifecycle_access_request, lifecycle_account, lifecycle_email, lifecycle_invitation,
)

__all__ += ["PLATFORM_IMAGING", "check_answers_access", "check_reactivate", "depends_on_live_data", "email_owners_fn",
            "lifecycle_access_request", "lifecycle_account", "lifecycle_email", "lifecycle_invitation",
            "platform_imaging_allowed", "with_live_shares"]
