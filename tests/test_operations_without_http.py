"""Operations run from any entry point, not only from a Flask request: the DICOM node, the CLI and
jobs build a Context from the services and dispatch the same `$operations` the REST API routes."""
from __future__ import annotations

import json

import flask
import pytest

from fhirserver.access import SystemJob, job_policy
from fhirserver.errors import FhirError
from fhirserver.interactions import FhirRequest, dispatch, transact


def _run(services, policy, req: FhirRequest):  # noqa: ANN001, ANN202
    ctx = services.context(policy)
    return transact.run(services.repo, lambda tx: dispatch(ctx, tx, req),
                        write=transact.writes(req, ctx.operations))


def test_operations_dispatch_outside_any_request(app) -> None:  # noqa: ANN001
    services = app.extensions["fhirserver"]
    assert not flask.has_app_context() and not flask.has_request_context()
    seed = SystemJob("test seed")
    for body in ({"resourceType": "Patient", "id": "np1", "name": [{"family": "Nohttp"}]},
                 {"resourceType": "Observation", "id": "no1", "status": "final", "code": {"text": "bp"},
                  "subject": {"reference": "Patient/np1"}},
                 {"resourceType": "DiagnosticReport", "id": "nr1", "status": "final", "code": {"text": "CBCT"},
                  "subject": {"reference": "Patient/np1"}, "result": [{"reference": "Observation/no1"}]}):
        _run(services, seed, FhirRequest("PUT", body["resourceType"], body["id"], body=body))
    job = job_policy("chart-export", "system/*.rs")
    everything = _run(services, job, FhirRequest("GET", "Patient", "np1", operation="$everything"))
    assert everything.status == 200
    resources = [json.loads(e["resource"]) if isinstance(e["resource"], str) else e["resource"]
                 for e in everything.body["entry"]]
    got = {(r["resourceType"], r["id"]) for r in resources}
    assert {("Patient", "np1"), ("Observation", "no1"), ("DiagnosticReport", "nr1")} <= got
    pdf = _run(services, job, FhirRequest("GET", "DiagnosticReport", "nr1", operation="$render"))
    assert pdf.status == 200 and bytes(pdf.body).startswith(b"%PDF") and pdf.body.mime == "application/pdf"
    # the job's own scopes still decide: a job that may not read reports gets 403, not the PDF
    narrow = job_policy("patients-only", "system/Patient.rs")
    with pytest.raises(FhirError) as refused:
        _run(services, narrow, FhirRequest("GET", "DiagnosticReport", "nr1", operation="$render"))
    assert refused.value.status == 403
