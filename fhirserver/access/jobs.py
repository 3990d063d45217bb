"""Named internal jobs: a principal with a name and exactly the system scopes the job needs.

Some work a user triggers needs more than the user may do themselves: booking marks a clinic
Slot busy, which no patient may write. Such work runs as a named job with the narrowest scopes
(a SMART v2 query limits them further), never as the open policy, so what it may touch is stated
in one place and the gate still filters every read and write it makes.
"""
from __future__ import annotations

from fhirserver.access.scopes import parse_scopes
from fhirserver.access.smart import Principal, SmartPolicy

JOB_CLIENT_PREFIX = "fhirserver-job:"


def job_principal(name: str, scopes: str) -> Principal:
    """A system principal bound to no organization, limited to `scopes` (space separated)."""
    return Principal(client_id=JOB_CLIENT_PREFIX + name, role="system",
                     scopes=tuple(parse_scopes(scopes.split())), scope_text=scopes)


def job_policy(name: str, scopes: str, *, postgres: bool = False) -> SmartPolicy:
    return SmartPolicy(job_principal(name, scopes), postgres=postgres)


__all__ = ["JOB_CLIENT_PREFIX", "job_policy", "job_principal"]
