"""The access policy (who may see what), called by every entry point."""
from fhirserver.access.policy import OpenPolicy, Policy
from fhirserver.access.scopes import Scope, parse_scope, parse_scopes
from fhirserver.access.smart import PATIENT_COMPARTMENT_TYPES, Principal, SmartPolicy
from fhirserver.access.operations import OPERATION_NEEDS, OperationNeeds, check_operation, guard_all

__all__ = ["OpenPolicy", "PATIENT_COMPARTMENT_TYPES", "Policy", "Principal", "Scope", "SmartPolicy",
           "parse_scope", "parse_scopes"]
__all__ += ["OPERATION_NEEDS", "OperationNeeds", "check_operation", "guard_all"]
