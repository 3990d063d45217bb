"""The access policy (who may see what), called by every entry point."""
from fhirserver.access.policy import OpenPolicy, Policy
from fhirserver.access.scopes import Scope, parse_scope, parse_scopes
from fhirserver.access.smart import PATIENT_COMPARTMENT_TYPES, Principal, SmartPolicy

__all__ = ["OpenPolicy", "PATIENT_COMPARTMENT_TYPES", "Policy", "Principal", "Scope", "SmartPolicy",
           "parse_scope", "parse_scopes"]
from fhirserver.access.binary import PROXY_TYPES, with_security_context  # noqa: E402  Binary.securityContext
from fhirserver.access.jobs import job_policy, job_principal  # noqa: E402  named internal jobs

__all__ += ["PROXY_TYPES", "job_policy", "job_principal", "with_security_context"]
from fhirserver.access.audit_event import with_audit_event_rule  # noqa: E402  AuditEvents naming others

__all__ += ["with_audit_event_rule"]
