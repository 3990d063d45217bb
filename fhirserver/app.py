"""The app factory: wires settings, storage and the blueprints into one Flask app."""
from __future__ import annotations

import logging

from flask import Flask, jsonify

from fhirserver.api import blueprint, install_error_handlers
from fhirserver.api import health, openapi
from fhirserver.api.telemetry import install_telemetry, metrics_blueprint
from fhirserver.config import Settings, settings_from_env
from fhirserver.services import Services, build_services


def create_app(settings: Settings | None = None, *, upgrade_schema: bool = False) -> Flask:
    """Build the WSGI app. No work at import time; the schema is migrated only when asked."""
    settings = settings or settings_from_env()
    services = build_services(settings, upgrade_schema=upgrade_schema)
    app = Flask("fhirserver")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["fhirserver"] = services
    app.register_blueprint(blueprint(), url_prefix="/fhir")
    import smart_auth  # issue 6: /auth, /.well-known/openid-configuration, smart-configuration

    smart_auth.install(app)
    from dicom.web import blueprint as dicomweb_blueprint  # issue 5: DICOMweb (PS3.18)

    app.register_blueprint(dicomweb_blueprint(), url_prefix="/dicomweb")
    from portal import blueprint as portal_blueprint  # issue 8: the patient portal

    app.register_blueprint(portal_blueprint(), url_prefix="/portal")
    app.register_blueprint(health.blueprint())  # /healthz, /readyz: open, for probes
    app.register_blueprint(metrics_blueprint())  # /metrics (Prometheus text)
    app.register_blueprint(openapi.blueprint())  # /openapi.json, /docs
    install_error_handlers(app)
    install_telemetry(app)

    @app.get("/")
    def _root():  # noqa: ANN202
        return jsonify({"name": "fhirserver", "fhir": "/fhir", "metadata": "/fhir/metadata"})

    logging.getLogger("fhirserver").setLevel(settings.log_level.upper())  # --log-level
    return app
