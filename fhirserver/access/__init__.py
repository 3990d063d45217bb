"""The access policy (who may see what), called by every entry point."""
from fhirserver.access.policy import OpenPolicy, Policy
from fhirserver.access.scopes import Scope, parse_scope, parse_scopes
from fhirserver.access.smart import PATIENT_COMPARTMENT_TYPES, Principal, SmartPolicy

__all__ = ["OpenPolicy", "PATIENT_COMPARTMENT_TYPES", "Policy", "Principal", "Scope", "SmartPolicy",
           "parse_scope", "parse_scopes"]
from fhirserver.access.dicom import dicom_node_principal, organization_of, visible_ids, visible_studies  # noqa: E402

__all__ += ["dicom_node_principal", "organization_of", "visible_ids", "visible_studies"]
