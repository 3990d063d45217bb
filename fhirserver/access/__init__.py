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
