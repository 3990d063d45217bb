"""The app factory: wires settings, storage and the blueprints into one Flask app."""
from __future__ import annotations

import logging

from flask import Flask, jsonify

import console
import portal
import smart_auth
from dicom import ImagingRecords, web as dicomweb
from fhirserver.api import (
    LeanReads, blueprint, health, install_error_handlers, install_telemetry, metrics_blueprint, openapi,
)
from fhirserver import notify, subscriptions
from fhirserver.config import Settings, settings_from_env
from fhirserver.operations import Ports, build_registry, export
from fhirserver.services import Services, build_services
from viewer import register as register_viewer
from fhirserver.access import SystemJob
from fhirserver.storage import ReadStatements
from smart_auth import INSECURE_NO_AUTH, build_policy


def install_jobs(services: Services) -> None:
    """The job kinds this server runs, and how a requester's Principal becomes its policy again
    when its job runs (the same builder as a request's)."""
    jobs = services.jobs
    jobs.registry.policy_for = lambda principal: build_policy(services.repo, services.settings, principal)
    jobs.register(notify.EMAIL_JOB, notify.deliver_job, max_attempts=8, backoff_seconds=30.0)
    export.install(services)  # bulk.export, bulk.expire
    subscriptions.register_jobs(jobs, services.repo, services.settings)  # notifications


def start_jobs(app: Flask) -> None:
    """Start this process's job worker threads (`serve`, in each HTTP worker; `worker`)."""
    services: Services = app.extensions["fhirserver"]
    if services.settings.job_threads > 0:
        services.jobs.worker(services, threads=services.settings.job_threads,
                             poll_seconds=services.settings.job_poll_seconds).start()


def close_app(app: Flask | None) -> None:
    """Stop the app's background threads (job workers, audit writer after its last batch,
    Broadcast listener) and close its connection pool; idempotent. Every owner of an app calls
    it when done: gunicorn's `worker_exit`, `fhirserver worker`, the `--dev` seed app, tests.
    Anything else (a worker whose app never loaded, gunicorn's error app) is left alone."""
    services = getattr(app, "extensions", {}).get("fhirserver")
    if isinstance(services, Services):
        services.close()


def operation_ports(services: Services) -> Ports:
    """The owners of the logins, the DICOM index and the share links, as the operations reach them."""
    return Ports(logins=smart_auth.LoginDirectory(), imaging=ImagingRecords(services.blobs),
                 shares=portal.ShareLinks())


def create_app(settings: Settings | None = None, *, upgrade_schema: bool = False) -> Flask:
    """Build the WSGI app. No work at import time; the schema is migrated only when asked."""
    settings = settings or settings_from_env()
    # the `$operations` the router serves and the CapabilityStatement declares
    services = build_services(settings, upgrade_schema=upgrade_schema, operations=build_registry())
    services.ports = operation_ports(services)
    app = Flask("fhirserver")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["fhirserver"] = services
    install_jobs(services)
    app.register_blueprint(blueprint(), url_prefix="/fhir")
    smart_auth.install(app)  # /auth, /.well-known/openid-configuration, smart-configuration
    app.register_blueprint(dicomweb.blueprint(), url_prefix="/dicomweb")  # DICOMweb (PS3.18)
    app.register_blueprint(portal.blueprint(), url_prefix="/portal")  # the patient portal
    register_viewer(app)  # the DICOM viewer's static files at /viewer/
    app.register_blueprint(console.blueprint(), url_prefix="/console")  # the clinic staff console
    app.register_blueprint(health.blueprint())  # /healthz, /readyz: open, for probes
    app.register_blueprint(metrics_blueprint())  # /metrics (Prometheus text)
    app.register_blueprint(openapi.blueprint())  # /openapi.json, /docs
    install_error_handlers(app)
    report = install_telemetry(app)
    if settings.lean_reads:  # plain reads by id answered before Flask (everything else passes through)
        open_policy = SystemJob(INSECURE_NO_AUTH) if settings.insecure_no_auth else None
        bearer = None if settings.insecure_no_auth else smart_auth.lean_access(services)
        dicom_lean = dicomweb.lean_layer(  # WADO-RS instances and QIDO-RS searches, likewise
            app, app.wsgi_app, services, report, open_policy=open_policy, bearer_access=bearer)
        app.wsgi_app = LeanReads(  # type: ignore[method-assign]
            dicom_lean, ReadStatements(services.repo.engine), report, services.audit,
            open_policy=open_policy, bearer_access=bearer, services=services)

    @app.get("/")
    def _root():  # noqa: ANN202
        return jsonify({"name": "fhirserver", "fhir": "/fhir", "metadata": "/fhir/metadata"})

    logging.getLogger("fhirserver").setLevel(settings.log_level.upper())  # --log-level
    return app
